//! Traces and the per-flow log level.
//!
//! With `tracing.otlp` configured (or `OTEL_EXPORTER_OTLP_ENDPOINT` set), every message gets a
//! span (`message`, with its flow and id) and a child span per step and per output,
//! exported over OTLP/HTTP (protobuf or JSON) by `opentelemetry`'s batch processor. A message
//! that came with a W3C `traceparent` (an `http_server` request's header) continues the
//! caller's trace, and every HTTP call of a step or output carries the `traceparent` of the span it is
//! made in — or, with no export configured, the caller's own `traceparent` unchanged, so a
//! trace crosses weft either way.
//!
//! `log_level` on a flow sets the level of the log lines written while one of its messages is
//! handled (its `message` span is entered), above or below the process's `WEFT_LOG`. Without
//! export and without any flow `log_level`, no span is made: the hot path pays one check.
//!
//! This module sets export and the log filter up; the spans and trace context made per message
//! are `crate::core::trace`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::Secret;

/// `tracing:` at the top level of a config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "TracingSettings")]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export spans over OTLP/HTTP (without it, `OTEL_EXPORTER_OTLP_ENDPOINT` turns export on).
    pub otlp: Option<OtlpConfig>,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "OtlpExport")]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://localhost:4318/v1/traces`.
    pub endpoint: String,
    /// `http/protobuf` (the default) or `http/json`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Headers sent with every export, e.g. a vendor's API key.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The share of traces weft starts that are recorded, in [0, 1] (default 1). A trace a
    /// caller started is recorded as its `traceparent` says.
    #[serde(default = "all")]
    pub sample: f64,
    /// The spans' `service.name` (default `weft`).
    pub service_name: Option<String>,
}

fn all() -> f64 {
    1.0
}

/// The OTLP encoding over HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    Protobuf,
    #[serde(rename = "http/json")]
    Json,
}

impl TracingConfig {
    /// The export settings: the config's, else the standard `OTEL_EXPORTER_OTLP_*` variables.
    pub fn export(&self) -> Option<OtlpConfig> {
        if let Some(otlp) = &self.otlp {
            return Some(otlp.clone());
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })?;
        Some(OtlpConfig {
            endpoint,
            protocol: match var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
                Some("http/json") => OtlpProtocol::Json,
                _ => OtlpProtocol::Protobuf,
            },
            headers: BTreeMap::new(),
            sample: 1.0,
            service_name: var("OTEL_SERVICE_NAME"),
        })
    }
}

/// The exporting half of tracing: keep it until the end, then [`Export::shutdown`] flushes
/// what is buffered.
pub struct Export {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Export {
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "could not flush the last spans");
        }
    }
}

/// Errors setting up export.
#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp: {0}")]
pub struct ExportError(String);

/// Builds the OpenTelemetry layer for `config`; call from inside the tokio runtime (exports
/// are sent by its tasks).
pub fn export_layer<S>(
    config: &OtlpConfig,
) -> Result<(impl tracing_subscriber::Layer<S>, Export), ExportError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let headers = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect::<HashMap<_, _>>();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(TokioClient::new())
        .with_endpoint(config.endpoint.clone())
        .with_protocol(match config.protocol {
            OtlpProtocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
            OtlpProtocol::Json => opentelemetry_otlp::Protocol::HttpJson,
        })
        .with_headers(headers)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ExportError(e.to_string()))?;
    let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
        opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(config.sample.clamp(0.0, 1.0)),
    ));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone().unwrap_or_else(|| "weft".into()))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("weft"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("weft::flow", tracing::Level::TRACE),
        );
    crate::core::trace::set_exporting();
    Ok((layer, Export { provider }))
}

use tracing_subscriber::Layer as _;

/// Sends the exporter's requests on the tokio runtime it was made in: the batch processor runs
/// on a thread of its own, which has no reactor.
#[derive(Debug)]
struct TokioClient {
    runtime: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<Bytes>,
    >,
}

impl TokioClient {
    fn new() -> TokioClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        TokioClient {
            runtime: tokio::runtime::Handle::current(),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(https),
        }
    }
}

impl opentelemetry_http::HttpClient for TokioClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<http::Response<Bytes>, opentelemetry_http::HttpError>,
                > + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
            let exchange = async {
                let response = client.request(request).await.map_err(|e| e.to_string())?;
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, 4 << 20)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>(http::Response::from_parts(parts, body))
            };
            tokio::time::timeout(Duration::from_secs(10), exchange)
                .await
                .map_err(|_| "the collector did not answer in 10 s".to_string())?
        });
        Box::pin(async move {
            match task.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.to_string().into()),
            }
        })
    }
}

static FLOW_LEVELS: RwLock<Option<HashMap<String, LevelFilter>>> = RwLock::new(None);
/// Whether any flow has a level: checked before the lock, on every log line.
static ANY_FLOW_LEVEL: AtomicBool = AtomicBool::new(false);

/// Sets the flows' own log levels (`log_level`); the others follow `WEFT_LOG`.
pub fn set_flow_levels(levels: impl IntoIterator<Item = (String, LevelFilter)>) {
    let levels: HashMap<String, LevelFilter> = levels.into_iter().collect();
    ANY_FLOW_LEVEL.store(!levels.is_empty(), Ordering::Relaxed);
    *FLOW_LEVELS.write().expect("levels lock") = (!levels.is_empty()).then_some(levels);
    // Callsites decided "never" under the old levels are asked again.
    tracing::callsite::rebuild_interest_cache();
}

/// The flow's name, kept on its `message` span for the level filter.
struct FlowName(String);

/// `WEFT_LOG` (an `EnvFilter`), except inside a `message` span of a flow with a `log_level`,
/// where that level decides.
pub struct FlowLevels {
    env: tracing_subscriber::EnvFilter,
}

impl FlowLevels {
    pub fn new(env: tracing_subscriber::EnvFilter) -> FlowLevels {
        FlowLevels { env }
    }

    fn most_verbose() -> Option<LevelFilter> {
        if !ANY_FLOW_LEVEL.load(Ordering::Relaxed) {
            return None;
        }
        FLOW_LEVELS
            .read()
            .expect("levels lock")
            .as_ref()
            .and_then(|levels| levels.values().max().copied())
    }

    /// The level of the flow whose message span is current, if it has one.
    fn flow_level<S: tracing::Subscriber + for<'a> LookupSpan<'a>>(
        cx: &Context<'_, S>,
    ) -> Option<LevelFilter> {
        if !ANY_FLOW_LEVEL.load(Ordering::Relaxed) {
            return None;
        }
        let levels = FLOW_LEVELS.read().expect("levels lock");
        let levels = levels.as_ref()?;
        let span = cx.lookup_current()?;
        span.scope().find_map(|span| {
            let extensions = span.extensions();
            let name = extensions.get::<FlowName>()?;
            levels.get(&name.0).copied()
        })
    }
}

// A layer rather than a per-layer filter: a per-layer filter that refuses an event in
// `event_enabled` trips tracing-subscriber's bookkeeping; a layer filters for every layer.
impl<S> tracing_subscriber::Layer<S> for FlowLevels
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &tracing::Metadata<'_>, cx: Context<'_, S>) -> bool {
        if meta.is_span() && meta.target() == "weft::flow" {
            return true;
        }
        // Other spans follow `WEFT_LOG`; events may be let through by a flow's level, which
        // `event_enabled` then checks against the flow they are in.
        tracing_subscriber::Layer::<S>::enabled(&self.env, meta, cx)
            || (meta.is_event() && Self::most_verbose().is_some_and(|max| *meta.level() <= max))
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: Context<'_, S>) -> bool {
        match Self::flow_level(&cx) {
            Some(level) => *event.metadata().level() <= level,
            None => tracing_subscriber::Layer::<S>::enabled(&self.env, event.metadata(), cx),
        }
    }

    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Asked first, so that its span directives (`[message{flow=x}]=debug`) still apply.
        let env = tracing_subscriber::Layer::<S>::register_callsite(&self.env, meta);
        let ours = (meta.is_span() && meta.target() == "weft::flow")
            || (meta.is_event() && Self::most_verbose().is_some_and(|max| *meta.level() <= max));
        if ours && !env.is_always() {
            tracing::subscriber::Interest::sometimes()
        } else {
            env
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let env = tracing_subscriber::Layer::<S>::max_level_hint(&self.env);
        match (env, Self::most_verbose()) {
            (Some(env), Some(flow)) => Some(env.max(flow)),
            (_, None) => env,
            (None, Some(_)) => None,
        }
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: Context<'_, S>,
    ) {
        if attrs.metadata().name() == "message" && attrs.metadata().target() == "weft::flow" {
            struct Find(Option<String>);
            impl tracing::field::Visit for Find {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "flow" {
                        self.0 = Some(value.to_string());
                    }
                }
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "flow" {
                        self.0 = Some(format!("{value:?}"));
                    }
                }
            }
            let mut find = Find(None);
            attrs.record(&mut find);
            if let (Some(name), Some(span)) = (find.0, cx.span(id)) {
                span.extensions_mut().insert(FlowName(name));
            }
        }
        tracing_subscriber::Layer::<S>::on_new_span(&self.env, attrs, id, cx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: Context<'_, S>,
    ) {
        tracing_subscriber::Layer::<S>::on_record(&self.env, id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_enter(&self.env, id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_exit(&self.env, id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_close(&self.env, id, cx);
    }
}
