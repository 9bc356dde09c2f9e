//! Logging of every subcommand: stderr, human or JSON lines, `WEFT_LOG`'s level with flows'
//! own `log_level`s applied, and the OpenTelemetry layer when `run` exports spans.

use crate::LogFormat;

/// What the output layers of logging sit on: the level filter over the registry.
pub type LogBase =
    tracing_subscriber::layer::Layered<weft::telemetry::FlowLevels, tracing_subscriber::Registry>;

/// Logs to stderr (human or JSON lines) at `WEFT_LOG`'s level, flows' own `log_level`s
/// applied; `export` adds the OpenTelemetry layer.
pub fn init_logging(
    format: LogFormat,
    quiet: bool,
    export: Option<Box<dyn tracing_subscriber::Layer<LogBase> + Send + Sync>>,
) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if quiet { "off" } else { "info" }));
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| Redacting);
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

/// stderr, with every credential of a configured URL taken out of each line: what libraries log
/// (a NATS client's connect options, a pool's key) is covered as well as weft's own lines.
struct Redacting;

impl std::io::Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole, so a value is never split across writes.
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(weft::config::secret::redact(text).as_bytes())?,
            Err(_) => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
