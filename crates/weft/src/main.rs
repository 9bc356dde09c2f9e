//! The `weft` command: `run`, `check`, `test`, `init`, `dlq`, `tap`, `openapi`, `schema`,
//! `completions`. The only place `anyhow` appears.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use weft::clients::Shared;
use weft::config::ConfigError;
use weft::load;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "API integration engine: runs declarative flows between APIs",
    after_help = "Examples:
  weft run examples/quickstart.yaml            run flows until SIGTERM/SIGINT
  weft check flows/*.yaml                      report every config error, run nothing
  weft test                                    run every *_test.yaml under this directory
  weft init                                    write a starter flow and its test
  weft dlq list --flow orders                  dead letters of a durable flow
  weft completions bash > ~/.local/share/bash-completion/completions/weft

Docs: docs/flows.md"
)]
struct Cli {
    /// How log lines are written to stderr: `human` or `json` (one object per line).
    #[arg(long, global = true, env = "WEFT_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every flow in the files until SIGTERM/SIGINT, or until all inputs are finite and drained.
    #[command(after_help = "Examples:
  weft run examples/quickstart.yaml
  weft run flows/*.yaml --admin-address 0.0.0.0:9464 --admin-token \"$TOKEN\"
  WEFT_LOG=debug weft run flow.yaml --log-format json

SIGTERM/SIGINT drains (a second one stops at once). A changed config file, or SIGHUP,
reloads the config: only the flows that changed restart; an invalid config is logged and the
running flows go on. SIGHUP also reloads TLS certificates.")]
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Admin endpoint (`/metrics`, `/health`); overrides `admin.address` in the config.
        #[arg(long, env = "WEFT_ADMIN_ADDRESS")]
        admin_address: Option<String>,
        /// Bearer token for the admin endpoint (required when it is not on loopback); overrides
        /// `admin.token`.
        #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Where durable flows keep their store (`weft.db`).
        #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
        data_dir: PathBuf,
    },
    /// Validate the files without running anything; every error is reported. Exit 1 on any.
    #[command(after_help = "Example:
  weft check flows/*.yaml
  flows/orders.yaml:12:9: flow `orders`, output.http_client, field `retyr`: unknown field
      help: did you mean `retry`?")]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the tests of flows (`*_test.yaml`): messages or requests in, outputs and HTTP calls
    /// mocked, assertions on what came out. Exit 1 on any failure.
    #[command(after_help = "Examples:
  weft test                                    every *_test.yaml under this directory
  weft test examples/ flows/orders.yaml        a directory, and the test of one flow
  weft test flows/ --filter refund             only tests whose name contains `refund`
  weft test flows/orders_test.yaml --record    call the real APIs, write the tests' fixtures

A test file:
  tests:
    - name: an order is mapped
      flow: orders
      messages:
        - value: { id: 42 }
      expect:
        outputs:
          output.http_client:
            messages:
              - includes: { order_id: \"42\" }")]
    Test {
        /// Test files, flow files (their `_test.yaml` beside them) or directories; default `.`.
        paths: Vec<PathBuf>,
        /// Send HTTP calls no declared mock answers to the network, and write the answers to
        /// each test's `fixtures` file.
        #[arg(long)]
        record: bool,
        /// Run only the tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Write a starter flow and its test into a directory (default `.`).
    #[command(after_help = "Example:
  weft init flows --name orders && weft test flows")]
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The flow's name (snake_case): the files are NAME.yaml and NAME_test.yaml.
        #[arg(long, default_value = "hello")]
        name: String,
    },
    /// Inspect, replay or purge dead letters; works while weft runs or when it is stopped.
    #[command(after_help = "Examples:
  weft dlq list                                  every flow's dead letters, oldest first
  weft dlq show --id 01J8Z3…                     one in full, with its attempts
  weft dlq replay --flow orders --since 1h       back on the queue
  weft dlq purge --flow orders")]
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Print the messages passing a flow's stage, one JSON object per line, from a running
    /// weft's admin endpoint (`/api/v1/flows/FLOW/tap`).
    #[command(after_help = "Examples:
  weft tap orders                                 every stage, 100 messages
  weft tap orders --stage output --limit 10       what the outputs are given
  weft tap orders --stage 'pipeline[1].map' --sample 0.01 --limit 1000
  weft tap orders --admin 10.0.0.5:9464 --admin-token \"$TOKEN\"

Stages are `input`, each step's id (`pipeline[0].filter`) and `output`;
`curl localhost:9464/api/v1/flows/orders` lists them.")]
    Tap(Tap),
    /// Look into an OpenAPI document, as the `openapi` output reads it.
    #[command(after_help = "Example:
  weft openapi list petstore.yaml")]
    Openapi {
        #[command(subcommand)]
        action: OpenapiAction,
    },
    /// Print the JSON Schema of the config file (for editors: see the modeline in `examples/`).
    #[command(after_help = "Example:
  weft schema > weft.schema.json
  # then, at the top of a flow file:
  # yaml-language-server: $schema=./weft.schema.json")]
    Schema,
    /// Print a shell completion script to standard output.
    #[command(after_help = "Examples:
  weft completions bash > ~/.local/share/bash-completion/completions/weft
  weft completions zsh > \"${fpath[1]}/_weft\"
  weft completions fish > ~/.config/fish/completions/weft.fish")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum OpenapiAction {
    /// One line per operation: operationId, method, path, summary.
    List { spec: PathBuf },
}

#[derive(Subcommand)]
enum DlqAction {
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
struct DlqArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A test's expected failures are reported by the test, not logged beside it.
    let quiet = matches!(cli.command, Command::Test { .. });
    // `run` sets logging up once its config is read: it may export spans.
    if !matches!(cli.command, Command::Run { .. }) {
        init_logging(cli.log_format, quiet, None);
    }
    // One crypto provider for the whole binary (see DEPS.md): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match cli.command {
        Command::Schema => {
            let _ = std::io::Write::write_all(
                &mut std::io::stdout(),
                load::schema::generate().as_bytes(),
            );
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            // Written in one go: a reader that stops early (`| head`) is not an error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            ExitCode::SUCCESS
        }
        Command::Check { files } => match load::load(&files, &Shared::default()) {
            Ok(loaded) => {
                println!("{} flow(s) OK", loaded.flows.len());
                ExitCode::SUCCESS
            }
            Err(errors) => report(&errors),
        },
        Command::Test {
            paths,
            record,
            filter,
        } => {
            let files = match weft::testing::discover(&paths) {
                Ok(files) if files.is_empty() => {
                    eprintln!("error: no *_test.yaml file found");
                    return ExitCode::FAILURE;
                }
                Ok(files) => files,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime starts");
            let options = weft::testing::Options { record, filter };
            let mut out = std::io::stdout();
            match runtime.block_on(weft::testing::run(&files, &options, &mut out)) {
                Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Init { dir, name } => match weft::testing::init(&dir, &name) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                println!("next: weft test {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Openapi {
            action: OpenapiAction::List { spec },
        } => match weft::clients::openapi::call::list(&spec.display().to_string()) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Tap(tap) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime starts");
            match runtime.block_on(tap.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dlq { action } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime starts");
            match runtime.block_on(dlq(action)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            files,
            admin_address,
            admin_token,
            data_dir,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime starts");
            let result = runtime.block_on(run(
                files,
                admin_address,
                admin_token,
                data_dir,
                cli.log_format,
            ));
            // A blocking read of stdin cannot be cancelled; do not wait for it after the drain.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
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
    let now = weft::core::durable::now_ms();
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

#[derive(clap::Args)]
struct Tap {
    flow: String,
    /// The stage to listen to; every stage when left out.
    #[arg(long)]
    stage: Option<String>,
    /// The share of messages shown, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    sample: f64,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// The admin endpoint: `ip:port` (plain HTTP) or a URL.
    #[arg(long, env = "WEFT_ADMIN_ADDRESS", default_value = weft::admin::DEFAULT_ADDRESS)]
    admin: String,
    /// Bearer token of the admin endpoint.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl Tap {
    /// Reads the server-sent events of the tap and prints each one's data as a line.
    async fn run(self) -> anyhow::Result<()> {
        use http_body_util::BodyExt;
        let base = if self.admin.contains("://") {
            self.admin.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", self.admin)
        };
        let mut query = vec![
            ("sample".to_string(), self.sample.to_string()),
            ("limit".to_string(), self.limit.to_string()),
        ];
        if let Some(stage) = &self.stage {
            query.push(("stage".into(), stage.clone()));
        }
        let query: String = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{base}/api/v1/flows/{}/tap?{query}", percent(&self.flow));
        let mut request =
            http::Request::get(&url).header(http::header::ACCEPT, "text/event-stream");
        if let Some(token) = self.admin_token.filter(|t| !t.is_empty()) {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .with_context(|| format!("bad admin address `{}`", self.admin))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let response = client.request(request).await.with_context(|| {
            format!("cannot reach the admin endpoint at {base} (is weft running?)")
        })?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let reason = serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
            anyhow::bail!("{status}: {reason}");
        }
        // Events are `data:` lines ending at an empty line; keep-alive comments start with `:`.
        let mut pending = Vec::new();
        let mut printed = 0;
        let mut out = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.trim_end_matches(['\r', '\n']).strip_prefix("data:") {
                    use std::io::Write;
                    if writeln!(out, "{}", data.trim_start()).is_err() {
                        return Ok(()); // the reader went away (`| head`)
                    }
                    printed += 1;
                }
            }
        }
        if printed < self.limit {
            eprintln!(
                "the stream ended after {printed} of {} messages: the flow was reloaded or removed, or weft stopped",
                self.limit
            );
        }
        Ok(())
    }
}

/// Percent-encodes a query or path value.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn report(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::FAILURE
}

/// What the output layers of logging sit on: the level filter over the registry.
type LogBase =
    tracing_subscriber::layer::Layered<weft::telemetry::FlowLevels, tracing_subscriber::Registry>;

/// Logs to stderr (human or JSON lines) at `WEFT_LOG`'s level, flows' own `log_level`s
/// applied; `export` adds the OpenTelemetry layer.
fn init_logging(
    format: LogFormat,
    quiet: bool,
    export: Option<Box<dyn tracing_subscriber::Layer<LogBase> + Send + Sync>>,
) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if quiet { "off" } else { "info" }));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<LogBase> + Send + Sync> = match format {
        LogFormat::Human => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let layers: Vec<_> = export.into_iter().chain(std::iter::once(fmt)).collect();
    let _ = tracing_subscriber::registry()
        .with(weft::telemetry::FlowLevels::new(filter))
        .with(layers)
        .try_init();
}

async fn run(
    files: Vec<PathBuf>,
    admin_flag: Option<String>,
    admin_token: Option<String>,
    data_dir: PathBuf,
    log_format: LogFormat,
) -> anyhow::Result<ExitCode> {
    // What the watcher compares with: the bytes this load read.
    let read_at_start: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
    let loaded = match load::load(&files, &Shared::default()) {
        Ok(loaded) => loaded,
        Err(errors) => {
            init_logging(log_format, false, None);
            return Ok(report(&errors));
        }
    };
    let export = match loaded.tracing.export() {
        None => {
            init_logging(log_format, false, None);
            None
        }
        Some(otlp) => {
            let (layer, export) = weft::telemetry::export_layer(&otlp)?;
            init_logging(log_format, false, Some(Box::new(layer)));
            tracing::info!(endpoint = %otlp.endpoint, "exporting spans over OTLP/HTTP");
            Some(export)
        }
    };
    let admin: SocketAddr = match admin_flag {
        Some(flag) => flag
            .parse()
            .context("--admin-address / WEFT_ADMIN_ADDRESS must be ip:port, like 127.0.0.1:9464")?,
        None => loaded.admin_address.unwrap_or_else(|| {
            weft::admin::DEFAULT_ADDRESS
                .parse()
                .expect("the default admin address parses")
        }),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let admin_token = admin_token
        .filter(|t| !t.is_empty())
        .map(weft::config::Secret::new)
        .or(loaded.admin_token.clone());
    let (reloads, reloaded) = tokio::sync::mpsc::channel(1);
    tokio::spawn(watch_config(
        files,
        read_at_start,
        reloads,
        AdminSettings::of(&loaded),
        (loaded.resources_text.clone(), loaded.resources.clone()),
    ));
    let options = weft::engine::Options {
        admin_address: admin,
        admin_token,
        admin_tls: loaded.admin_tls.clone(),
        data_dir,
        reloads: Some(reloaded),
    };
    let summary = weft::engine::run(loaded, options, shutdown).await;
    if let Some(export) = export {
        // Flushes what is buffered; the batch processor blocks its caller while it does.
        tokio::task::spawn_blocking(move || export.shutdown())
            .await
            .ok();
    }
    let summary = summary?;
    Ok(if summary.input_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Hot reload: when a config file's content changes (looked at every second, and taken once
/// it reads the same twice in a row, so a file being written is not loaded half done) or on
/// SIGHUP, the files are loaded again; a valid config goes to the engine, which restarts only
/// the flows that changed, and an invalid one is logged while the running flows go on.
async fn watch_config(
    files: Vec<PathBuf>,
    mut applied: Vec<Option<Vec<u8>>>,
    reloads: tokio::sync::mpsc::Sender<load::Loaded>,
    admin: AdminSettings,
    mut resources: (String, weft::clients::Resources),
) {
    use tokio::signal::unix::{SignalKind, signal};
    let read = |files: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
        files.iter().map(|f| std::fs::read(f).ok()).collect()
    };
    let mut pending: Option<Vec<Option<Vec<u8>>>> = None;
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = every.tick() => {
                let now = read(&files);
                if now == applied {
                    pending = None;
                    continue;
                }
                if pending.as_ref() != Some(&now) {
                    pending = Some(now); // changed: wait for it to settle
                    continue;
                }
                "a config file changed"
            }
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
        };
        pending = None;
        applied = read(&files);
        tracing::info!(reason = why, "reloading the config");
        let paths = files.clone();
        let previous = resources.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let lookup = |name: &str| std::env::var(name).ok();
            load::load_reusing(
                &paths,
                &lookup,
                &Shared::default(),
                Some((&previous.0, &previous.1)),
            )
        })
        .await;
        match loaded {
            Ok(Ok(loaded)) if loaded.flows.is_empty() => {
                tracing::error!("config reload refused: it has no flow; the running flows go on");
            }
            Ok(Ok(loaded)) => {
                if AdminSettings::of(&loaded) != admin {
                    tracing::warn!(
                        "`admin` or `tracing` settings changed: they take effect when weft restarts"
                    );
                }
                resources = (loaded.resources_text.clone(), loaded.resources.clone());
                if reloads.send(loaded).await.is_err() {
                    return; // the engine stopped
                }
            }
            Ok(Err(errors)) => {
                for e in &errors {
                    tracing::error!(error = %e, "config error");
                }
                tracing::error!(
                    errors = errors.len(),
                    "config reload refused: the running flows go on unchanged"
                );
            }
            Err(e) => tracing::error!(error = %e, "config reload failed"),
        }
    }
}

/// The `admin` settings a reload cannot change (the endpoint is bound once).
#[derive(PartialEq)]
struct AdminSettings {
    address: Option<SocketAddr>,
    token: Option<String>,
    tls: bool,
    /// Not `admin`, but likewise set up once: span export.
    tracing: weft::telemetry::TracingConfig,
}

impl AdminSettings {
    fn of(loaded: &load::Loaded) -> AdminSettings {
        AdminSettings {
            address: loaded.admin_address,
            token: loaded.admin_token.as_ref().map(|t| t.expose().to_string()),
            tls: loaded.admin_tls.is_some(),
            tracing: loaded.tracing.clone(),
        }
    }
}

/// First SIGTERM/SIGINT: drain and stop. Second: stop now. SIGHUP reloads TLS certificates
/// (each server's watcher listens for it too) and the config ([`watch_config`]); it never
/// stops weft.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut hangup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!(
                    "SIGHUP received: the config and TLS certificate files are read again"
                );
            }
        });
    }
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received; draining (send it again to stop at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without waiting for messages in flight");
    std::process::exit(130);
}
