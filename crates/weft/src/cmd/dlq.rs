//! `weft dlq`: lists, shows, replays and purges dead letters in the store directly (the same
//! functions the admin API's `/dlq` routes call). A replay or purge of more than one dead
//! letter says how many match before it acts, and acts only when confirmed (`--yes`, or `y`
//! at the prompt). `replay --edit` opens the message in `$EDITOR` and delivers what was saved.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DlqAction {
    /// One JSON line per dead letter, oldest failure first.
    List(DlqArgs),
    /// One dead letter in full (metadata, history); needs --id.
    Show(DlqArgs),
    /// Put dead letters back on their flow's queue, attempts reset, history kept.
    Replay(DlqArgs),
    /// Delete dead letters.
    Purge(DlqArgs),
}

#[derive(clap::Args)]
pub struct DlqArgs {
    #[arg(long)]
    flow: Option<String>,
    #[arg(long)]
    id: Option<String>,
    /// RFC 3339 time or a duration ago (`1h`).
    #[arg(long)]
    since: Option<String>,
    /// Only failures whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Only failures whose last answer had this HTTP status.
    #[arg(long)]
    status: Option<u16>,
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Replay or purge what matches without asking.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Replay: edit the message (needs --id) in $EDITOR first; the history keeps the original.
    #[arg(long)]
    edit: bool,
    #[command(flatten)]
    store: super::StoreArgs,
}

pub async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    use weft::admin::dlq::{parse_since, to_json};
    let (args, verb) = match &action {
        DlqAction::List(a) => (a, "list"),
        DlqAction::Show(a) => (a, "show"),
        DlqAction::Replay(a) => (a, "replay"),
        DlqAction::Purge(a) => (a, "purge"),
    };
    anyhow::ensure!(
        !args.edit || verb == "replay",
        "--edit goes with `weft dlq replay`"
    );
    let store = args
        .store
        .open("no flow that keeps dead letters has run")
        .await?;
    let since_ms = match &args.since {
        Some(s) => Some(parse_since(s).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let filter = weft_store::DlqFilter {
        flow: args.flow.clone(),
        id: args.id.clone(),
        since_ms,
        reason: args.reason.clone(),
        status: args.status,
        ..Default::default()
    };
    if let Some(flow) = &args.flow {
        known_flow(&store, flow).await?;
    }
    let now = weft::core::clock::now_ms();
    match verb {
        "list" => {
            for dead in store.dead_letters(&filter, args.limit).await? {
                println!("{}", to_json(&dead, false));
            }
        }
        "show" => {
            anyhow::ensure!(args.id.is_some(), "`weft dlq show` needs --id");
            let dead = store.dead_letters(&filter, 1).await?;
            let dead = dead.first().context("no such dead letter")?;
            println!("{:#}", to_json(dead, true));
        }
        "replay" if args.edit => {
            let id = args.id.as_deref().context("`--edit` needs --id")?;
            let dead = store.dead_letters(&filter, 1).await?;
            let dead = dead.first().context("no such dead letter")?;
            let replacement = edited(&to_json(dead, false)["message"])?;
            anyhow::ensure!(
                weft::admin::dlq::replay_edited(&store, args.flow.clone(), id, &replacement)
                    .await?,
                "the dead letter was replayed or purged meanwhile"
            );
            println!("replayed 1 (edited)");
        }
        "replay" | "purge" => {
            let matched = store.count_dead_letters(&filter).await?;
            if matched == 0 {
                println!("no dead letter matches");
                return Ok(());
            }
            if args.id.is_none() && !args.yes {
                confirm(verb, matched)?;
            }
            if verb == "replay" {
                println!("replayed {}", store.replay(filter, now).await?);
            } else {
                println!("purged {}", store.purge(filter).await?);
            }
        }
        _ => unreachable!("every verb is matched above"),
    }
    Ok(())
}

/// Refuses a flow the store has never kept anything of, naming the flows it has.
async fn known_flow(store: &weft_store::Store, flow: &str) -> anyhow::Result<()> {
    let of_flow = weft_store::DlqFilter {
        flow: Some(flow.to_string()),
        ..Default::default()
    };
    if store.count_dead_letters(&of_flow).await? > 0 || store.depth(flow).await?.messages > 0 {
        return Ok(());
    }
    let mut flows: Vec<String> = store
        .dead_letters(&weft_store::DlqFilter::default(), 10_000)
        .await?
        .into_iter()
        .map(|d| d.flow)
        .collect();
    flows.sort();
    flows.dedup();
    anyhow::bail!(
        "flow `{flow}` has no dead letters and nothing queued in this store{}",
        if flows.is_empty() {
            String::new()
        } else {
            format!("; flows with dead letters: {}", flows.join(", "))
        }
    )
}

/// Says how many match and asks; without a terminal to ask on, `--yes` is needed.
fn confirm(verb: &str, matched: u64) -> anyhow::Result<()> {
    let noun = if matched == 1 {
        "dead letter matches"
    } else {
        "dead letters match"
    };
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "{matched} {noun}; run again with --yes to {verb} them"
    );
    print!("{matched} {noun}. {verb} them? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    anyhow::ensure!(matches!(answer.trim(), "y" | "Y" | "yes"), "nothing done");
    Ok(())
}

/// Opens `message` (pretty JSON) in `$EDITOR` (or `$VISUAL`, else `vi`) and reads back what
/// was saved.
fn edited(message: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let dir = std::env::temp_dir().join(format!("weft-dlq-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("message.json");
    std::fs::write(&file, format!("{message:#}\n"))?;
    // Through the shell, as git does, so an editor with arguments works.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .with_context(|| format!("cannot start the editor `{editor}`"))?;
    let text = std::fs::read_to_string(&file);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        status.success(),
        "the editor `{editor}` failed ({status}); nothing replayed"
    );
    let text = text?;
    serde_json::from_str(&text)
        .with_context(|| format!("the edited message is not JSON; nothing replayed:\n{text}"))
}
