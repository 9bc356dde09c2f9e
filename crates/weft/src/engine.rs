//! Starts built flows and runs them until their inputs end or shutdown is signalled, then
//! drains: inputs stop accepting, messages in flight finish (within `shutdown_timeout`), and
//! only then does [`run`] return. A message whose input was acked is never abandoned by a
//! drain; one that is abandoned at the timeout was never acked, so its sender still holds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use weft_store::{Store, StoreError};

use crate::config::{FlowSpec, Loaded};
use crate::core::durable::{self, DurableQueue};
use crate::core::flow::{Flow, OutputSlot, ProcessorSlot};
use crate::core::metrics::{self, ComponentMetrics};
use crate::inputs::{Feed, Input, http_server};
use crate::outputs::Output;
use crate::processors::Processor;

/// A flow of weft's own components.
pub type RunFlow = Flow<Processor, Output>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        address: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error("flow `{flow}`, {component}: {source}")]
    Input {
        flow: String,
        component: String,
        source: std::io::Error,
    },
    #[error(
        "the admin endpoint on {0} would be reachable from other machines without a token: set `admin.token` (or --admin-token / WEFT_ADMIN_TOKEN), or bind it to 127.0.0.1"
    )]
    AdminUnprotected(SocketAddr),
    #[error("an input task panicked: {0}")]
    Panicked(String),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shutdown timed out with messages still in flight (none of them had been acked)")]
    DrainTimeout,
}

/// How the run ended.
#[derive(Debug, Default)]
pub struct Summary {
    pub input_errors: Vec<EngineError>,
}

/// Where the engine listens and keeps its data.
pub struct Options {
    pub admin_address: SocketAddr,
    /// The bearer token admin requests must carry; required when the address is not loopback.
    pub admin_token: Option<crate::clients::secret::Secret>,
    /// Serve the admin endpoint over HTTPS.
    pub admin_tls: Option<Arc<crate::server::tls::Tls>>,
    /// The store file `weft.db` lives here; created when a flow is `durable`.
    pub data_dir: PathBuf,
}

pub async fn run(
    loaded: Loaded,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Summary, EngineError> {
    let admin_address = options.admin_address;
    // An empty token would let every request through.
    let admin_token = options
        .admin_token
        .clone()
        .filter(|t| !t.expose().is_empty());
    if !admin_address.ip().is_loopback() && admin_token.is_none() {
        return Err(EngineError::AdminUnprotected(admin_address));
    }
    // Installed before any flow registers its metric handles, which would otherwise be no-ops.
    let handle = metrics::install();
    let store = if loaded.flows.iter().any(FlowSpec::needs_store) || loaded.resources.wants_store()
    {
        let path = options.data_dir.join("weft.db");
        // A data directory weft creates is its owner's only (the store's files are too).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&options.data_dir)
            .map_err(|source| EngineError::DataDir {
                path: options.data_dir.clone(),
                source,
            })?;
        let store = Store::open_owner(&path, loaded.durability).await?;
        tracing::info!(path = %path.display(), durability = ?loaded.durability, "store open");
        loaded.resources.attach_store(&store);
        Some(store)
    } else {
        None
    };
    let mut durable_flows = Vec::new();
    let mut servers: HashMap<SocketAddr, Vec<(http_server::Endpoint, Arc<RunFlow>)>> =
        HashMap::new();
    let mut readers = Vec::new();
    let mut all_flows = std::collections::BTreeMap::new();
    for spec in loaded.flows {
        let Assembled {
            flow,
            input,
            input_id,
            workers,
        } = assemble(spec, store.as_ref()).await?;
        all_flows.insert(flow.name.to_string(), flow.clone());
        if flow.durable().is_some() {
            durable_flows.push((flow.clone(), workers));
        }
        match input {
            Input::HttpServer(endpoint) => servers
                .entry(endpoint.address)
                .or_default()
                .push((endpoint, flow)),
            other => readers.push((other, input_id, flow)),
        }
    }

    // Every listener is bound before the admin endpoint answers, so `/health` means "ready".
    let mut listeners = Vec::new();
    for (address, endpoints) in servers {
        let what = endpoints
            .iter()
            .map(|(e, f)| format!("flow `{}` {}", f.name, e.path))
            .collect::<Vec<_>>()
            .join(", ");
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| EngineError::Bind {
                address,
                what: what.clone(),
                source,
            })?;
        tracing::info!(%address, endpoints = %what, "listening");
        listeners.push((listener, endpoints));
    }
    let admin = tokio::net::TcpListener::bind(admin_address)
        .await
        .map_err(|source| EngineError::Bind {
            address: admin_address,
            what: "admin endpoint".into(),
            source,
        })?;
    let admin_stop = CancellationToken::new();
    // Histogram samples pile up in memory until folded in; fold them whether or not anyone scrapes.
    tokio::spawn({
        let handle = handle.clone();
        let stop = admin_stop.clone();
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        }
    });
    let admin_task = tokio::spawn({
        let stop = admin_stop.clone();
        let router = crate::admin::router(handle, store.clone(), admin_token, Arc::new(all_flows));
        let tls = options.admin_tls.clone();
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch("admin".into(), stop.clone()));
        }
        crate::server::serve(admin, router, tls, crate::server::Limits::default(), stop)
    });
    tracing::info!(address = %admin_address, "admin endpoint: /metrics, /health");

    let worker_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    for (flow, _) in &durable_flows {
        if let Some(queue) = flow.durable() {
            workers.spawn(durable::upkeep(queue.clone(), worker_stop.clone()));
        }
    }
    for (flow, count) in &durable_flows {
        workers.spawn(durable::work(flow.clone(), *count, worker_stop.clone()));
    }
    if let Some(store) = &store {
        workers.spawn(sweep_expired_keys(store.clone(), worker_stop.clone()));
    }

    let tasks = TaskTracker::new();
    let mut inputs = JoinSet::new();
    for (listener, endpoints) in listeners {
        let shutdown = shutdown.clone();
        let flow = endpoints[0].1.name.to_string();
        inputs.spawn(async move {
            http_server::serve(listener, endpoints, shutdown)
                .await
                .map_err(|source| EngineError::Input {
                    flow,
                    component: "input.http_server".into(),
                    source,
                })
        });
    }
    for (input, component, flow) in readers {
        let feed = Feed {
            flow: flow.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        };
        inputs.spawn(async move {
            input.run(feed).await.map_err(|source| EngineError::Input {
                flow: flow.name.to_string(),
                component,
                source,
            })
        });
    }

    let drained = async {
        let mut summary = Summary::default();
        while let Some(result) = inputs.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "input stopped");
                    summary.input_errors.push(e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "input task panicked");
                    summary
                        .input_errors
                        .push(EngineError::Panicked(e.to_string()));
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        summary
    };
    tokio::pin!(drained);
    let finished = tokio::select! {
        summary = &mut drained => Some(summary),
        _ = shutdown.cancelled() => None,
    };
    let summary = match finished {
        Some(summary) => {
            // The inputs ended by themselves: deliver what the store queues hold before
            // stopping, unless told to stop first (it stays stored for the next run).
            let queues_empty = async {
                for (flow, _) in &durable_flows {
                    while let Some(queue) = flow.durable()
                        && !queue.is_drained().await
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            };
            tokio::select! {
                _ = queues_empty => {}
                _ = shutdown.cancelled() => {}
            }
            summary
        }
        None => {
            tracing::info!(timeout = ?loaded.shutdown_timeout, "shutting down: no new messages accepted; draining those in flight");
            match tokio::time::timeout(loaded.shutdown_timeout, &mut drained).await {
                Ok(summary) => summary,
                Err(_) => {
                    admin_stop.cancel();
                    return Err(EngineError::DrainTimeout);
                }
            }
        }
    };
    worker_stop.cancel();
    // A worker finishes the message in its hands; one that does not in time leaves it leased,
    // and the next start delivers it again.
    let _ = tokio::time::timeout(loaded.shutdown_timeout, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    tracing::info!("all flows drained");
    admin_stop.cancel();
    // A scrape in progress gets a moment to finish; the admin endpoint holds no messages.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), admin_task).await;
    Ok(summary)
}

/// A flow built from its spec; its input is still to be run.
pub struct Assembled {
    pub flow: Arc<RunFlow>,
    pub input: Input,
    pub input_id: String,
    /// A durable flow's delivery workers (its `concurrency`).
    pub workers: u32,
}

/// Builds the runtime flow of `spec`, opening its store queue when it is durable (`store` is
/// then required).
pub async fn assemble(spec: FlowSpec, store: Option<&Store>) -> Result<Assembled, EngineError> {
    let name: Arc<str> = spec.name.as_str().into();
    let processors = spec
        .processors
        .into_iter()
        .map(|(id, processor)| ProcessorSlot { id, processor })
        .collect();
    let outputs = spec
        .outputs
        .into_iter()
        .map(|(id, output, retry)| OutputSlot {
            metrics: ComponentMetrics::new(&name, &id),
            id,
            output,
            retry,
        })
        .collect();
    let durable = match (spec.durable, store) {
        (Some(limits), Some(store)) => Some(Arc::new(
            DurableQueue::open(store.clone(), name.clone(), limits, spec.order_by).await?,
        )),
        _ => None,
    };
    // A durable flow's `concurrency` is its delivery workers; intake has its own bound.
    let in_flight = if durable.is_some() {
        durable::INTAKE_LIMIT
    } else {
        spec.concurrency
    };
    let flow = Arc::new(Flow::new(
        name,
        &spec.input_id,
        in_flight,
        processors,
        outputs,
        durable,
        store.cloned(),
    ));
    Ok(Assembled {
        flow,
        input: spec.input,
        input_id: spec.input_id,
        workers: spec.concurrency,
    })
}

/// Gives back the space of expired dedupe and idempotency keys now and then (they already read
/// as absent the moment they expire).
async fn sweep_expired_keys(store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
        match store.kv_expire(durable::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "expired keys removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove expired keys"),
        }
    }
}
