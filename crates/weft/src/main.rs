//! The `weft` command: `run`, `check`, `test`, `init`, `dlq`, `checkpoint`, `tap`, `openapi`,
//! `schema`, `completions`. The only place `anyhow` appears.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use weft::clients::Shared;
use weft::config::ConfigError;
use weft::load;

mod cmd;

use cmd::checkpoint::{CheckpointAction, checkpoint};
use cmd::dlq::{DlqAction, dlq};
use cmd::logging::init_logging;
use cmd::run::run;
use cmd::tap::Tap;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in the `mimalloc.h` that `libmimalloc-sys` builds (v3); the
/// crate's own constants are of an older numbering.
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commit the allocator's memory as it is used, not a whole arena up front (9 MiB more resident
/// at idle otherwise, for no speed). Run from `.init_array`, before the runtime's first
/// allocation reserves that arena: from `main` it would be too late.
#[cfg(target_os = "linux")]
extern "C" fn allocator_options() {
    // SAFETY: sets a plain integer option, which mimalloc reads when it reserves an arena.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

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
        /// Run as a node of a cluster: the NATS server (with JetStream) its nodes share;
        /// overrides `cluster.nats.url`.
        #[arg(long, env = "WEFT_CLUSTER", hide_env_values = true)]
        cluster: Option<String>,
        /// This node's name in the cluster (default: the host name); overrides `cluster.node`.
        #[arg(long, env = "WEFT_NODE")]
        node: Option<String>,
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
  weft dlq replay --flow orders --since 1h       back on the queue (asks first)
  weft dlq replay --flow orders --status 503 -y  those whose last answer was 503
  weft dlq replay --id 01J8Z3… --edit            fix the message in $EDITOR, then replay
  weft dlq purge --flow orders")]
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Show, set or reset the watermarks of polling inputs; works while weft runs or when it
    /// is stopped.
    #[command(after_help = "Examples:
  weft checkpoint list                              every watermark, one JSON line each
  weft checkpoint show crm_sync                     one (the key is the flow's name by default)
  weft checkpoint set crm_sync '\"2026-11-01T00:00:00Z\"'
  weft checkpoint reset crm_sync                    re-import from the input's `initial`")]
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
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
    /// Show a cluster's nodes and which node runs which input.
    #[command(after_help = "Example:
  weft cluster status --nats nats://10.0.0.2:4222 --name prod")]
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
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
enum ClusterAction {
    /// The live nodes, and the inputs' leases with their holders.
    Status {
        /// The NATS server the nodes share.
        #[arg(long, env = "WEFT_CLUSTER", hide_env_values = true)]
        nats: String,
        /// The cluster's name (`cluster.name`).
        #[arg(long, default_value = "weft")]
        name: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OpenapiAction {
    /// One line per operation: operationId, method, path, summary.
    List { spec: PathBuf },
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
        Command::Check { files } => {
            let env = weft::admin::config::EnvLookup::default();
            match load::load_with(&files, &|name: &str| env.get(name), &Shared::default()) {
                Ok(loaded) => {
                    println!("{} flow(s) OK", loaded.flows.len());
                    ExitCode::SUCCESS
                }
                Err(errors) => report(&errors, &env),
            }
        }
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
        Command::Dlq { action } => on_store(dlq(action)),
        Command::Cluster { action } => on_store(cluster(action)),
        Command::Checkpoint { action } => on_store(checkpoint(action)),
        Command::Run {
            files,
            admin_address,
            admin_token,
            data_dir,
            cluster,
            node,
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
                cmd::run::ClusterFlags { url: cluster, node },
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

/// Prints config errors without a `${VAR}` value the load read (an error may quote one) or a
/// credential weft knows of.
fn report(errors: &[ConfigError], env: &weft::admin::config::EnvLookup) -> ExitCode {
    for e in errors {
        eprintln!("error: {}", env.hide(e.to_string()));
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::FAILURE
}

/// How long `weft cluster status` waits for NATS.
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `weft cluster status`.
async fn cluster(action: ClusterAction) -> anyhow::Result<()> {
    let ClusterAction::Status { nats, name, json } = action;
    // A NATS that takes the connection but does not answer must not hang the tool.
    let status = tokio::time::timeout(TOOL_TIMEOUT, async {
        weft::cluster::Cluster::for_tool(&nats, &name)
            .await
            .map_err(anyhow::Error::msg)?
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the cluster's buckets: {e}"))
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer from NATS within {}s", TOOL_TIMEOUT.as_secs()))??;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "cluster {} on {}: {} node(s)",
        status.cluster,
        status.nats,
        status.nodes.len()
    );
    for node in &status.nodes {
        let held: Vec<&str> = status.held_by(&node.node).collect();
        println!(
            "  node {}  admin {}  runs: {}",
            node.node,
            node.admin.as_deref().unwrap_or("-"),
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(", ")
            }
        );
    }
    for (key, holder) in &status.leases {
        if !status.nodes.iter().any(|n| n.node == *holder) {
            println!(
                "  {key}: held by {holder}, which is not alive (another node takes it over within the lease time)"
            );
        }
    }
    for q in &status.queues {
        println!(
            "  queue {}  waiting {}  in delivery {}  retries {}  dead letters {}",
            q.flow, q.waiting, q.in_delivery, q.retries, q.dead_letters
        );
    }
    Ok(())
}

/// Runs a command on the store (`dlq`, `checkpoint`) and reports its error.
fn on_store(command: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
