//! Several `weft run` nodes sharing one NATS JetStream server (or cluster), and nothing else.
//!
//! What a node shares with the others, in three KV buckets named after the cluster
//! (`weft_<name>_…`):
//! - `state`: everything flows keep as key/value (checkpoints, `dedupe` keys, `Idempotency-Key`
//!   records, OAuth 2.0 tokens), through [`weft_store::NatsKv`]: compare-and-set on revisions.
//! - `leases`: which node runs each input that must run once in the cluster (pollers,
//!   schedules, subscriptions every node would otherwise receive in full) and each of weft's
//!   own chores (the sweep of expired shared keys): [`lease`]. Its key `settings` holds the
//!   lease time every node keeps to.
//! - `nodes`: who is alive; each node writes its record every third of the lease time and the
//!   bucket forgets it after a lease time (`weft cluster status` reads it).
//!
//! Direct flows need nothing more: any node serves their requests. Durable flows keep their
//! queues, retries and dead letters in JetStream streams every node delivers from
//! ([`weft_store::NatsQueues`]), ordered flows in partitions that each deliver one message at
//! a time.

/// The cluster's queues, for a node (`ack_wait` its lease time), or for a tool with `looking`
/// (it opens what the nodes made and makes nothing).
pub fn queues(cluster: &Cluster, looking: bool) -> std::sync::Arc<weft_store::NatsQueues> {
    let queues = weft_store::NatsQueues::new(
        cluster.js.clone(),
        &cluster.settings.name,
        cluster.settings.lease_ttl,
        cluster.settings.replicas,
    );
    std::sync::Arc::new(if looking { queues.looking() } else { queues })
}

pub mod lease;

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::config::units::Dur;

/// `cluster:` at the top level of a config file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ClusterConfig")]
pub struct ClusterConfig {
    /// The NATS server (with JetStream) the nodes share.
    pub nats: NatsConfig,
    /// The cluster's name: the prefix of its buckets, so that several clusters can share one
    /// NATS. Letters, digits, `-` and `_`. Default `weft`.
    #[serde(default)]
    pub name: Option<String>,
    /// This node's name, unique in the cluster (two nodes of one name would take each other's
    /// leases). Default: the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// How long a node's hold on an input outlives its last renewal: a node that died is
    /// replaced within about this time. The same on every node. Default `6s`.
    #[serde(default)]
    pub lease_ttl: Option<Dur>,
    /// Copies NATS keeps of the cluster's buckets when they are made: 3 on a NATS cluster of
    /// three servers (so that losing one loses nothing), 1 (default) on a single server.
    #[serde(default)]
    pub replicas: Option<usize>,
}

/// `cluster.nats`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ClusterNats")]
pub struct NatsConfig {
    /// `nats://[user:password@]host:4222` (or `tls://…`), several comma-separated.
    pub url: Secret,
    /// A PEM file of the certificate authorities that sign the servers' certificates, for
    /// `tls://` servers that a public authority does not sign.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// A PEM file of this node's certificate, for servers that require clients to present one
    /// (`verify: true` in their `tls` block); with `key`.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    /// The PEM file of `cert`'s private key.
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
}

/// A cluster's settings, defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Secret,
    pub ca: Option<std::path::PathBuf>,
    /// The client certificate and its key.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub name: String,
    pub node: String,
    pub lease_ttl: Duration,
    pub replicas: usize,
}

const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// How long a request to NATS may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: cannot connect to NATS at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error(
        "cluster: cannot open the cluster's buckets on NATS at {url}: {detail} (is JetStream on? `nats-server -js`, or `jetstream {{}}` in its config)"
    )]
    Bucket { url: String, detail: String },
    #[error(
        "cluster `{cluster}` runs with lease_ttl {theirs} ms (its first node set it) and this node has {mine} ms: give every node the same `cluster.lease_ttl` (to change it, stop every node and delete key `settings` of bucket weft_{cluster}_leases)"
    )]
    LeaseTtl {
        cluster: String,
        theirs: u64,
        mine: u64,
    },
}

impl ClusterConfig {
    /// The settings with defaults; `Err` names the field that is wrong.
    pub fn settings(&self) -> Result<Settings, (&'static str, String)> {
        let name = self.name.clone().unwrap_or_else(|| "weft".into());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                "name",
                format!("`{name}`: use letters, digits, `-` and `_` (it names NATS buckets)"),
            ));
        }
        let node = match &self.node {
            Some(node) => node.clone(),
            None => hostname(),
        };
        if node.is_empty()
            || !node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || node.starts_with('.')
            || node.ends_with('.')
        {
            return Err((
                "node",
                format!("`{node}`: use letters, digits, `-`, `_` and `.` inside"),
            ));
        }
        let lease_ttl = self.lease_ttl.map_or(DEFAULT_LEASE_TTL, |d| d.0);
        if lease_ttl < Duration::from_secs(1) {
            return Err(("lease_ttl", "at least 1s".into()));
        }
        crate::clients::nats::Nats::open(&self.nats.url).map_err(|e| ("nats.url", e))?;
        let replicas = self.replicas.unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            return Err(("replicas", "1 to 5 (NATS keeps at most five copies)".into()));
        }
        let identity = match (&self.nats.cert, &self.nats.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => return Err(("nats.key", "`cert` needs its `key`".into())),
            (None, Some(_)) => return Err(("nats.cert", "`key` needs its `cert`".into())),
        };
        Ok(Settings {
            url: self.nats.url.clone(),
            ca: self.nats.ca.clone(),
            identity,
            name,
            node,
            lease_ttl,
            replicas,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weft".into())
}

/// A node's place in the cluster: the connection and the buckets.
#[derive(Clone)]
pub struct Cluster {
    pub settings: Settings,
    /// The servers, without credentials, for messages.
    pub shown: String,
    pub js: jetstream::Context,
    pub leases: kv::Store,
    pub nodes: kv::Store,
    pub state: kv::Store,
}

/// A node's record in the `nodes` bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    /// When the node joined (milliseconds since the epoch).
    pub since_ms: i64,
    /// Its admin endpoint.
    pub admin: Option<String>,
}

impl Cluster {
    /// Connects and opens (creating if needed) the cluster's buckets. Fails at once, with the
    /// reason, when NATS cannot be reached or has no JetStream.
    pub async fn join(settings: Settings) -> Result<Cluster, ClusterError> {
        Self::connect(settings, true).await
    }

    /// Connects to a cluster its nodes made, creating nothing (for tools: `weft cluster
    /// status`, `weft checkpoint --cluster`).
    pub async fn look_at(settings: Settings) -> Result<Cluster, ClusterError> {
        Self::connect(settings, false).await
    }

    async fn connect(settings: Settings, node: bool) -> Result<Cluster, ClusterError> {
        let shown = crate::clients::nats::Nats::open(&settings.url)
            .map(|n| n.shown().to_string())
            .unwrap_or_default();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("weft {}", settings.node))
            .connection_timeout(Duration::from_secs(5));
        if let Some(ca) = &settings.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &settings.identity {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client =
            options
                .connect(settings.url.expose())
                .await
                .map_err(|e| ClusterError::Connect {
                    url: shown.clone(),
                    detail: e.to_string(),
                })?;
        let mut js = jetstream::new(client);
        // A request NATS does not answer (it is down, the client reconnecting) fails after
        // this long: a webhook waiting on a shared key gets its 503 in seconds.
        js.set_timeout(REQUEST_TIMEOUT);
        let ttl = settings.lease_ttl;
        let replicas = settings.replicas;
        let open = |suffix: &'static str, max_age: Duration, what: &'static str| {
            let (js, shown) = (js.clone(), shown.clone());
            let bucket = format!("weft_{}_{suffix}", settings.name);
            async move {
                weft_store::open_bucket(&js, &bucket, what, node.then_some((max_age, replicas)))
                    .await
                    .map_err(|detail| ClusterError::Bucket { url: shown, detail })
            }
        };
        let leases = open(
            "leases",
            Duration::ZERO,
            "weft: which node runs which input",
        )
        .await?;
        if node {
            agree_on_lease_ttl(&leases, &settings, &shown).await?;
        }
        let nodes = open("nodes", ttl, "weft: the nodes alive").await?;
        if node {
            // A bucket made for another lease time (one all nodes agreed to change) forgets
            // nodes after this one.
            let mut stream = nodes.stream.clone();
            if let Ok(info) = stream.info().await
                && info.config.max_age != ttl
            {
                let mut config = info.config.clone();
                config.max_age = ttl;
                js.update_stream(config)
                    .await
                    .map_err(|e| ClusterError::Bucket {
                        url: shown.clone(),
                        detail: e.to_string(),
                    })?;
            }
        }
        let state = open(
            "state",
            Duration::ZERO,
            "weft: checkpoints, dedupe and idempotency keys, tokens",
        )
        .await?;
        if node {
            tracing::info!(cluster = %settings.name, node = %settings.node, nats = %shown, "joined the cluster");
        }
        Ok(Cluster {
            settings,
            shown,
            js,
            leases,
            nodes,
            state,
        })
    }

    /// Writes this node's record every third of the lease time until `stop`, then removes it.
    pub async fn heartbeat(self, admin: Option<String>, stop: tokio_util::sync::CancellationToken) {
        let record = NodeRecord {
            node: self.settings.node.clone(),
            since_ms: crate::core::clock::now_ms(),
            admin,
        };
        let value: bytes::Bytes = serde_json::to_vec(&record)
            .expect("a node record serializes")
            .into();
        let key = format!("node.{}", self.settings.node);
        let mut alive = 1;
        crate::core::metrics::cluster_nodes(alive);
        loop {
            if let Err(e) = self.nodes.put(&key, value.clone()).await {
                tracing::warn!(cluster = %self.settings.name, error = %e, "could not write this node's heartbeat");
            }
            if let Some(counted) = self.count_nodes().await
                && counted != alive
            {
                alive = counted;
                tracing::info!(cluster = %self.settings.name, nodes = alive, "{alive} node(s) alive: each keeps to 1/{alive} of every rate limit");
                crate::clients::rate_limit::set_nodes(alive);
                crate::core::metrics::cluster_nodes(alive);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.settings.lease_ttl / 3) => {}
            }
        }
        let _ = self.nodes.purge(&key).await;
    }
}

impl Cluster {
    /// The nodes whose heartbeat is fresh; `None` when the bucket cannot be read (the share
    /// stays as it was).
    async fn count_nodes(&self) -> Option<u32> {
        let counted = live_entries(&self.nodes).await.ok()?.len();
        Some((counted as u32).max(1))
    }
}

/// The keys of `bucket` that hold a value now, each once, with their values. Listed from the
/// stream's subjects in one request rather than by `Store::keys`: that listing also yields
/// the keys written while it runs (a lease renewed meanwhile came out twice, a node's
/// heartbeat too), and on NATS 2.9 it ran on for as long as writes went on.
async fn live_entries(bucket: &kv::Store) -> Result<Vec<(String, bytes::Bytes)>, String> {
    use futures_util::TryStreamExt;
    let subjects: Vec<(String, usize)> = bucket
        .stream
        .info_with_subjects(format!("{}>", bucket.prefix))
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut keys: Vec<&str> = subjects
        .iter()
        .filter_map(|(subject, _)| subject.strip_prefix(bucket.prefix.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        // A deleted or purged key keeps its marker until it lapses: no value. One that cannot
        // be read now is left out, as the listing would have.
        if let Ok(Some(value)) = bucket.get(key).await {
            entries.push((key.to_string(), value));
        }
    }
    Ok(entries)
}

impl Cluster {
    /// [`Cluster::look_at`] cluster `name` on the NATS at `url`, for a tool that is no node of
    /// it (`weft cluster status`, `weft checkpoint --cluster`).
    pub async fn for_tool(url: &str, name: &str) -> Result<Cluster, String> {
        let settings = ClusterConfig {
            nats: NatsConfig {
                url: Secret::new(url),
                ca: None,
                cert: None,
                key: None,
            },
            name: Some(name.into()),
            node: Some("tool".into()),
            lease_ttl: None,
            replicas: None,
        }
        .settings()
        .map_err(|(field, message)| format!("{field}: {message}"))?;
        Cluster::look_at(settings).await.map_err(|e| e.to_string())
    }
}

/// The cluster's shared store (key/value, queues and dead letters), for tools (`weft
/// checkpoint --cluster`, `weft dlq --cluster`).
pub async fn shared_state(url: &str, name: &str) -> Result<weft_store::Store, String> {
    let cluster = Cluster::for_tool(url, name).await?;
    let queues = queues(&cluster, true);
    Ok(weft_store::Store::of(
        weft_store::NatsKv::kv_only(cluster.state).with_queues(queues),
    ))
}

/// The key in the `leases` bucket that holds the cluster's lease time.
const SETTINGS_KEY: &str = "settings";

/// The lease time every node keeps to: the first node writes it, a node with another one is
/// refused (a contender with a shorter lease time than the holder's would take over from a
/// holder that is alive). Once every node is stopped, deleting the key lets a new one be set.
async fn agree_on_lease_ttl(
    leases: &kv::Store,
    settings: &Settings,
    shown: &str,
) -> Result<(), ClusterError> {
    let mine = settings.lease_ttl.as_millis().to_string();
    let refused = |detail: String| ClusterError::Bucket {
        url: shown.to_string(),
        detail,
    };
    for _ in 0..3 {
        match leases.entry(SETTINGS_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let theirs = String::from_utf8_lossy(&entry.value).into_owned();
                if theirs == mine {
                    return Ok(());
                }
                return Err(ClusterError::LeaseTtl {
                    cluster: settings.name.clone(),
                    theirs: theirs.parse().unwrap_or_default(),
                    mine: settings.lease_ttl.as_millis() as u64,
                });
            }
            Ok(_) => match leases.create(SETTINGS_KEY, mine.clone().into()).await {
                Ok(_) => return Ok(()),
                // Another node wrote it first: compare with that.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(refused(e.to_string())),
            },
            Err(e) => return Err(refused(e.to_string())),
        }
    }
    Err(refused(
        "the cluster's settings changed three times while joining".into(),
    ))
}

impl Status {
    /// The keys of the leases `node` holds (`input.<flow>`).
    pub fn held_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.leases
            .iter()
            .filter(move |(_, holder)| holder == node)
            .map(|(key, _)| key.as_str())
    }
}

/// What `weft cluster status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub nats: String,
    pub nodes: Vec<NodeRecord>,
    /// Each lease: its key (`input.<flow>`) and the node that holds it.
    pub leases: Vec<(String, String)>,
    /// Each durable flow's queue.
    pub queues: Vec<QueueStatus>,
}

/// Where a durable flow's queue stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStatus {
    pub flow: String,
    /// Messages no node has taken yet: how far delivery lags behind intake.
    pub waiting: u64,
    /// Messages a node holds, being delivered.
    pub in_delivery: u64,
    /// Messages waiting for a retry.
    pub retries: u64,
    pub dead_letters: u64,
}

impl Cluster {
    pub async fn status(&self) -> Result<Status, String> {
        let mut nodes: Vec<NodeRecord> = live_entries(&self.nodes)
            .await?
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let mut leases = Vec::new();
        for (key, holder) in live_entries(&self.leases).await? {
            let Some(flow) = key.strip_prefix("input.").and_then(weft_store::token_text) else {
                continue;
            };
            let holder = String::from_utf8_lossy(&holder);
            let holder = holder.strip_prefix(lease::DONE).unwrap_or(&holder);
            leases.push((format!("input.{flow}"), holder.to_string()));
        }
        leases.sort();
        let queues = queues(self, true)
            .lag()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|lag| QueueStatus {
                flow: lag.flow,
                waiting: lag.waiting,
                in_delivery: lag.in_delivery,
                retries: lag.retries,
                dead_letters: lag.dead_letters,
            })
            .collect();
        Ok(Status {
            cluster: self.settings.name.clone(),
            nats: self.shown.clone(),
            nodes,
            leases,
            queues,
        })
    }
}
