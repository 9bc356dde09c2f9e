//! The shape of a config file: the top level, a flow and `resources:` as plain serde structs.
//!
//! They are the one source of what a file may hold: the loader deserializes them (so unknown
//! keys, wrong types and misspelt values get located errors with a "did you mean" like any
//! component's), and `weft schema` describes them (their doc comments become the
//! descriptions). The places that hold components are `IgnoredAny` here: the loader
//! deserializes and builds each component from its own node, so one bad component does not
//! hide the next; `#[schemars(with)]` gives the schema their real type.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use tracing::level_filters::LevelFilter;

use crate::config::units::{Dur, Size};
use crate::inputs::InputConfig;
use crate::outputs::OutputConfig;
use crate::processors::ProcessorConfig;

/// A weft config file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "weft config")]
#[expect(
    dead_code,
    reason = "the places of components: the loader reads each from its own node"
)]
pub(super) struct File {
    /// The flows, by name (snake_case, unique across all files).
    #[schemars(with = "BTreeMap<String, Flow>")]
    pub flows: Option<IgnoredAny>,
    /// The admin endpoint: `/metrics`, `/health` and the DLQ API.
    pub admin: Option<Admin>,
    /// How long a drain may take after SIGTERM/SIGINT (default 30s).
    pub shutdown_timeout: Option<Dur>,
    /// What a commit to the store survives: `process` (default) or `power`.
    pub durability: Option<Durability>,
    /// The free space the store keeps: under it, durable flows refuse new messages (HTTP
    /// 503) while delivery goes on and drains their queues. Default: 5 % of the data
    /// directory's file system, at most `64MiB`; `0B` turns it off.
    pub disk_free_limit: Option<Size>,
    /// Definitions components share by name.
    #[schemars(with = "Option<Resources>")]
    pub resources: Option<IgnoredAny>,
    /// Where HTTP calls may go (the outbound guard).
    pub outbound: Option<crate::clients::outbound::OutboundConfig>,
    /// Traces: span export over OTLP/HTTP.
    pub tracing: Option<crate::telemetry::TracingConfig>,
    /// Run as one node of several sharing a NATS JetStream server: inputs that must run once
    /// run on one node at a time, and what flows keep as key/value is shared.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// One flow: an input, a pipeline of processors, one or more outputs.
#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the places of components: the loader reads each from its own node"
)]
pub(super) struct Flow {
    #[schemars(with = "InputConfig")]
    pub input: Option<IgnoredAny>,
    /// Processors, run in order.
    #[schemars(with = "Option<Vec<ProcessorConfig>>")]
    pub pipeline: Option<Vec<IgnoredAny>>,
    /// The output (or `outputs:`, every one of which must accept).
    #[schemars(with = "Option<OutputConfig>")]
    pub output: Option<IgnoredAny>,
    #[schemars(with = "Option<Vec<OutputConfig>>")]
    pub outputs: Option<Vec<IgnoredAny>>,
    /// Messages in flight at once (direct), or delivery workers (durable).
    pub concurrency: Option<u32>,
    /// `direct` (default: acked after every output accepted) or `durable` (acked once stored).
    #[serde(default)]
    pub delivery: Delivery,
    /// Messages a durable flow may hold before it refuses more.
    pub max_queued: Option<u64>,
    /// Bytes a durable flow may hold before it refuses more.
    pub max_queued_bytes: Option<Size>,
    /// Deliver messages with the same key one at a time, in order.
    pub ordering: Option<Ordering>,
    /// The level of the log lines written while this flow's messages are handled (`error`,
    /// `warn`, `info`, `debug`, `trace`, `off`), instead of `WEFT_LOG`'s.
    pub log_level: Option<LogLevel>,
}

/// `delivery:` on a flow.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "DeliveryMode")]
pub(super) enum Delivery {
    /// In memory; the input is acked after every output accepted.
    #[default]
    Direct,
    /// Through the store; the input is acked once the message is committed.
    Durable,
}

/// `durability:` at the top level: what a commit to the store survives.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "DurabilityConfig")]
pub(super) enum Durability {
    Process,
    Power,
}

impl From<Durability> for weft_store::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Process => weft_store::Durability::Process,
            Durability::Power => weft_store::Durability::Power,
        }
    }
}

/// `ordering:` on a flow.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OrderingConfig")]
pub(super) struct Ordering {
    /// A VRL expression over the incoming message: messages with the same key are delivered
    /// one at a time, in the order they were accepted.
    pub by_key: String,
    /// On a cluster: how many partitions the keys are spread over (default 16, at most 1024).
    /// Each partition delivers one message at a time, in order, on whichever node; so this is
    /// how many keys are delivered at once across the cluster. Fixed once the flow's queue
    /// exists: to change it, drain the queue first. A single node orders each key on its own
    /// and ignores it.
    #[serde(default)]
    pub partitions: Option<u32>,
}

/// The admin endpoint: its address, token and TLS.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AdminConfig")]
pub(super) struct Admin {
    /// `host:port` of the admin endpoint (`/metrics`, `/health`, the DLQ API).
    #[serde(default)]
    pub address: Option<String>,
    /// The bearer token every admin request must carry; required off loopback.
    #[serde(default)]
    pub token: Option<crate::config::Secret>,
    /// Serve the admin endpoint over HTTPS; see [`crate::server::tls`].
    #[serde(default)]
    pub tls: Option<crate::server::tls::TlsConfig>,
    /// Other names the admin endpoint answers to (`Host`, and `Origin` of a browser), e.g.
    /// `weft.internal` or `weft.internal:443` behind a proxy. Always: its own address, and
    /// `localhost`, `127.0.0.1` and `[::1]` when it listens on loopback. Others get 421, which
    /// stops DNS rebinding.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The dashboard at `/ui/`.
    #[serde(default)]
    pub ui: Option<AdminUi>,
}

/// `admin.ui`: the dashboard.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AdminUiConfig")]
pub(super) struct AdminUi {
    /// Whether a dashboard session may change things (pause and resume flows, replay, edit and
    /// purge dead letters). `false` makes the dashboard read-only: its buttons are gone and
    /// such a request with the session's cookie gets 403 (the API's bearer token still may).
    #[serde(default = "yes")]
    pub actions: bool,
    /// How many delivered messages each flow remembers (their ids and when), so that "find a
    /// message" can say a message was delivered; 0 (the default) keeps none. Each costs 24
    /// bytes and a short lock per delivery; at most 1,000,000. Read at start.
    #[serde(default)]
    pub history: u32,
}

fn yes() -> bool {
    true
}

/// A log level.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Off,
}

impl From<LogLevel> for LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Off => LevelFilter::OFF,
        }
    }
}

/// `resources:`: definitions shared by name.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the places of components: the loader reads each from its own node"
)]
pub(super) struct Resources {
    #[schemars(with = "Option<BTreeMap<String, crate::clients::auth::Config>>")]
    pub auth: Option<BTreeMap<String, IgnoredAny>>,
    #[schemars(with = "Option<BTreeMap<String, crate::clients::rate_limit::Config>>")]
    pub rate_limits: Option<BTreeMap<String, IgnoredAny>>,
    #[schemars(with = "Option<BTreeMap<String, crate::clients::circuit::Config>>")]
    pub circuit_breakers: Option<BTreeMap<String, IgnoredAny>>,
    #[schemars(with = "Option<BTreeMap<String, crate::clients::sql::Config>>")]
    pub sql: Option<BTreeMap<String, IgnoredAny>>,
    #[schemars(with = "Option<BTreeMap<String, crate::clients::cache::Config>>")]
    pub caches: Option<BTreeMap<String, IgnoredAny>>,
}
