//! `weft dlq`: lists, shows, replays and purges dead letters in the store directly (the same
//! functions the admin API's `/dlq` routes call).

use std::path::PathBuf;

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
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    data_dir: PathBuf,
}

pub async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    use weft::admin::dlq::{parse_since, to_json};
    let (args, verb) = match &action {
        DlqAction::List(a) => (a, "list"),
        DlqAction::Show(a) => (a, "show"),
        DlqAction::Replay(a) => (a, "replay"),
        DlqAction::Purge(a) => (a, "purge"),
    };
    let path = args.data_dir.join("weft.db");
    anyhow::ensure!(
        path.exists(),
        "no store at {} (no durable flow has run with this --data-dir)",
        path.display()
    );
    let store = weft_store::Store::open(&path, weft_store::Durability::Process).await?;
    let since_ms = match &args.since {
        Some(s) => Some(parse_since(s).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let filter = weft_store::DlqFilter {
        flow: args.flow.clone(),
        id: args.id.clone(),
        since_ms,
    };
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
        "replay" => println!("replayed {}", store.replay(filter, now).await?),
        _ => println!("purged {}", store.purge(filter).await?),
    }
    Ok(())
}
