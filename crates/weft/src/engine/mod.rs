//! Starts built flows and runs them until their inputs end or shutdown is signalled, then
//! drains: inputs stop accepting, messages in flight finish (within `shutdown_timeout`), and
//! only then does [`run`] return. A message whose input was acked is never abandoned by a
//! drain; one that is abandoned at the timeout was never acked, so its sender still holds it.
//!
//! Hot reload: a new, already validated config ([`Options::reloads`]) replaces only the flows
//! whose settings changed (or every flow, when `resources` or `outbound` changed). An
//! `http_server` flow is swapped in its address's routing table at once: requests in progress
//! finish with the old flow, the next ones reach the new one. A reading input is stopped and
//! drained (what it took in is finished and acked) before the new one starts, so a source is
//! never read twice at a time. A durable flow's queue stays in the store; its old delivery
//! workers finish the messages in their hands while the new ones start. Untouched flows keep
//! running, their counters and state included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use weft_store::{Store, StoreError};

use crate::core::durable::{self, DurableQueue};
use crate::core::flow::{Flow, OutputSlot, ProcessorSlot};
use crate::core::metrics::{self, ComponentMetrics};
use crate::inputs::{Feed, Input, http_server};
use crate::load::{FlowSpec, Loaded, RunFlow};

mod reload;

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
    #[error(
        "the store at {path} cannot be written ({cause}: {detail}); weft does not start on a store where it could accept nothing"
    )]
    StoreUnwritable {
        path: PathBuf,
        cause: weft_store::Cause,
        detail: String,
    },
    #[error("shutdown timed out with messages still in flight (none of them had been acked)")]
    DrainTimeout,
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
    pub admin_token: Option<crate::config::Secret>,
    /// Serve the admin endpoint over HTTPS.
    pub admin_tls: Option<Arc<crate::server::tls::Tls>>,
    /// Other `Host` names the admin endpoint answers to (`admin.hosts`).
    pub admin_hosts: Vec<String>,
    /// Whether a dashboard session may change things (`admin.ui.actions`).
    pub admin_ui_actions: bool,
    /// Delivered messages each flow remembers for look-ups (`admin.ui.history`).
    pub admin_history: u32,
    /// The config's files and reloads, when run from files (`weft run`): the admin API shows
    /// them and asks for reloads through it.
    pub config: Option<crate::admin::config::ConfigState>,
    /// The store file `weft.db` lives here; created when a flow is `durable`.
    pub data_dir: PathBuf,
    /// New configs to switch to while running (hot reload), each already validated.
    pub reloads: Option<mpsc::Receiver<Loaded>>,
    /// Told once every flow runs and the admin endpoint listens: start-up is over.
    pub started: Option<tokio::sync::oneshot::Sender<()>>,
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
        .map(|(id, processor)| ProcessorSlot::new(id, processor))
        .collect();
    let outputs = spec
        .outputs
        .into_iter()
        .map(|(id, output, retry)| {
            let metrics = ComponentMetrics::new(&name, &id);
            OutputSlot::new(id, output, retry, metrics)
        })
        .collect();
    if spec.order_by.is_some()
        && let Some(store) = store
    {
        store.declare_ordered(&name, spec.order_partitions);
    }
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
    let flow = Arc::new(
        Flow::new(
            name,
            &spec.input_id,
            in_flight,
            processors,
            outputs,
            durable,
            store.cloned(),
        )
        .with_log_level(spec.log_level)
        .with_effective_config(spec.effective)
        .with_checkpoint_key(spec.input.checkpoint_key(&spec.name)),
    );
    Ok(Assembled {
        flow,
        input: spec.input,
        input_id: spec.input_id,
        workers: spec.concurrency,
    })
}

/// A flow built for [`Engine::start`].
struct Built {
    flow: Arc<RunFlow>,
    /// A reading input; `None` for `http_server` flows, which are `served`.
    input: Option<Input>,
    input_id: String,
    workers: u32,
    served: Option<http_server::Endpoint>,
    fingerprint: String,
}

/// A reading input's task.
struct Reader {
    id: u64,
    stop: CancellationToken,
    /// Its messages in flight.
    tasks: TaskTracker,
    handle: JoinHandle<()>,
    /// Stops the reading itself, should it not end when told.
    abort: tokio::task::AbortHandle,
}

/// A durable flow's delivery workers and queue upkeep.
struct Workers {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// A flow that runs.
struct Running {
    fingerprint: String,
    flow: Arc<RunFlow>,
    /// `http_server` flows: the address and endpoint they are served at.
    served: Option<(SocketAddr, http_server::Endpoint)>,
    reader: Option<Reader>,
    workers: Option<Workers>,
}

/// One address `http_server` flows are served at.
struct Listener {
    id: u64,
    table: http_server::Table,
    stop: CancellationToken,
    handle: JoinHandle<()>,
    /// What the address was started with; a reload cannot change these without a restart.
    tls: bool,
    limits: crate::server::Limits,
}

/// What an input task reports when it ends.
type Ended = (u64, Result<(), EngineError>);

struct Engine {
    flows: BTreeMap<String, Running>,
    listeners: HashMap<SocketAddr, Listener>,
    /// The flows the admin API shows.
    registry: crate::admin::api::Flows,
    /// The store, once a flow or resource needed it (shared with the admin API).
    store: crate::admin::StoreCell,
    durability: weft_store::Durability,
    data_dir: PathBuf,
    shared: String,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
    /// Reading inputs still running, by id.
    live: HashSet<u64>,
    /// Inputs and listeners a reload stopped, by id.
    retired: HashSet<u64>,
    next_id: u64,
    ended: mpsc::UnboundedSender<Ended>,
    /// Stops the store's upkeep (expired keys).
    store_stop: CancellationToken,
    /// What reloads stopped and that may still be finishing: waited for before weft stops.
    retiring: Vec<TaskTracker>,
    summary: Summary,
    /// `admin.ui.history`: delivered messages each flow remembers.
    history: u32,
    /// The cluster this node is part of (`cluster:`).
    cluster: Option<crate::cluster::Cluster>,
}

pub async fn run(
    loaded: Loaded,
    mut options: Options,
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
    let (ended, mut ended_rx) = mpsc::unbounded_channel();
    let mut engine = Engine {
        flows: BTreeMap::new(),
        listeners: HashMap::new(),
        registry: crate::admin::api::Flows::default(),
        store: crate::admin::StoreCell::default(),
        durability: loaded.durability,
        data_dir: options.data_dir.clone(),
        shared: loaded.shared.clone(),
        shutdown: shutdown.clone(),
        shutdown_timeout: loaded.shutdown_timeout,
        live: HashSet::new(),
        retired: HashSet::new(),
        next_id: 0,
        ended,
        store_stop: CancellationToken::new(),
        retiring: Vec::new(),
        summary: Summary::default(),
        history: options.admin_history,
        cluster: None,
    };
    if let Some(settings) = loaded.cluster.clone() {
        engine.cluster = Some(crate::cluster::Cluster::join(settings).await?);
    }
    engine.open_store(&loaded).await?;
    // No URL a message builds may reach the admin API, from the first delivery on.
    crate::clients::outbound::deny_own(admin_address);
    // Every listener is bound before the admin endpoint answers, so `/health` means "ready".
    let mut built = Vec::new();
    for spec in loaded.flows {
        built.push(engine.build(spec).await?);
    }
    engine.bind_all(&built).await?;
    for flow in built {
        engine.start(flow);
    }
    engine.publish();

    let admin = tokio::net::TcpListener::bind(admin_address)
        .await
        .map_err(|source| EngineError::Bind {
            address: admin_address,
            what: "admin endpoint".into(),
            source,
        })?;
    if let Ok(bound) = admin.local_addr() {
        crate::clients::outbound::deny_own(bound);
    }
    let admin_stop = CancellationToken::new();
    // Each flow's rates, sampled once a second for the dashboard; and histogram samples, which
    // pile up in memory until folded in, folded every five seconds whether or not anyone scrapes.
    let rates = crate::admin::rates::Rates::default();
    tokio::spawn({
        let handle = handle.clone();
        let stop = admin_stop.clone();
        let (rates, flows) = (rates.clone(), engine.registry.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {
                        rates.sample(&flows);
                        ticks += 1;
                        if ticks.is_multiple_of(5) {
                            handle.run_upkeep();
                        }
                    }
                }
            }
        }
    });
    let admin_task = tokio::spawn({
        let stop = admin_stop.clone();
        let access = crate::admin::Access {
            address: admin.local_addr().unwrap_or(admin_address),
            hosts: options.admin_hosts.clone(),
            ui_actions: options.admin_ui_actions,
            tls: options.admin_tls.is_some(),
            token: admin_token,
        };
        let router = crate::admin::router(
            handle,
            engine.store.clone(),
            access,
            engine.registry.clone(),
            rates,
            options.config.clone(),
            engine.cluster.clone(),
        );
        let tls = options.admin_tls.clone();
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch("admin".into(), stop.clone()));
        }
        crate::server::serve(admin, router, tls, crate::server::Limits::default(), stop)
    });
    tracing::info!(address = %admin_address, "admin endpoint: /metrics, /health, /api/v1");
    let heartbeat = engine.cluster.clone().map(|cluster| {
        tokio::spawn(cluster.heartbeat(Some(admin_address.to_string()), admin_stop.clone()))
    });
    if let Some(started) = options.started.take() {
        let _ = started.send(());
    }

    // Until shutdown, or until every input ended by itself (finite inputs, no server).
    let finished = loop {
        if engine.live.is_empty() && engine.listeners.is_empty() {
            break true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            Some((id, result)) = ended_rx.recv() => engine.input_ended(id, result),
            Some(next) = async {
                match options.reloads.as_mut() {
                    Some(reloads) => reloads.recv().await,
                    None => std::future::pending().await,
                }
            } => engine.reload(next).await,
        }
    };

    let result = if finished {
        engine.finish().await;
        Ok(())
    } else {
        tracing::info!(timeout = ?engine.shutdown_timeout, "shutting down: no new messages accepted; draining those in flight");
        engine.drain().await
    };
    admin_stop.cancel();
    if let Some(heartbeat) = heartbeat {
        // Leaving: the node's record goes at once, not when it lapses.
        let _ = tokio::time::timeout(Duration::from_secs(2), heartbeat).await;
    }
    if result.is_ok() {
        // A scrape in progress gets a moment to finish; the admin endpoint holds no messages.
        let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    }
    result.map(|()| engine.summary)
}

impl Engine {
    /// Opens the store when a flow or resource of `loaded` needs it and it is not open yet.
    async fn open_store(&mut self, loaded: &Loaded) -> Result<(), EngineError> {
        let needed =
            loaded.flows.iter().any(FlowSpec::needs_store) || loaded.resources.wants_store();
        if needed && self.store.get().is_none() {
            let path = self.data_dir.join("weft.db");
            // A data directory weft creates is its owner's only (the store's files are too).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.data_dir)
                .map_err(|source| EngineError::DataDir {
                    path: self.data_dir.clone(),
                    source,
                })?;
            let store = Store::open_owner(&path, self.durability)
                .await
                .map_err(|e| match e {
                    StoreError::Unavailable { cause, detail } => EngineError::StoreUnwritable {
                        path: path.clone(),
                        cause,
                        detail,
                    },
                    e => e.into(),
                })?;
            // Read when the store opens: a reload that changes it takes effect on restart.
            store.watch_free_space(loaded.disk_free_limit);
            tracing::info!(path = %path.display(), durability = ?self.durability, "store open");
            // On a cluster, what flows keep as key/value, and durable flows' queues, are the
            // cluster's.
            let store = match &self.cluster {
                Some(cluster) => Store::of(
                    weft_store::NatsKv::new(store, cluster.state.clone())
                        .with_queues(crate::cluster::queues(cluster, false)),
                ),
                None => store,
            };
            // Expired keys are swept by one node of a cluster (the sweep reads the whole shared
            // bucket), by the one process otherwise.
            match self.cluster.clone() {
                Some(cluster) => {
                    let (store, stop) = (store.clone(), self.store_stop.clone());
                    tokio::spawn(async move {
                        cluster
                            .chore("sweep", &stop, |held| {
                                let store = store.clone();
                                async move {
                                    sweep_expired_keys(store, held).await;
                                    Ok(())
                                }
                            })
                            .await
                    });
                }
                None => {
                    tokio::spawn(sweep_expired_keys(store.clone(), self.store_stop.clone()));
                }
            }
            let _ = self.store.set(store);
        }
        if let Some(store) = self.store.get() {
            loaded.resources.attach_store(store);
        }
        Ok(())
    }

    /// Builds a flow; an `http_server` flow's endpoint is set apart for its address.
    async fn build(&self, spec: FlowSpec) -> Result<Built, EngineError> {
        let fingerprint = spec.fingerprint.clone();
        let Assembled {
            flow,
            input,
            input_id,
            workers,
        } = assemble(spec, self.store.get()).await?;
        flow.keep_delivered(self.history);
        let (input, served) = match input {
            Input::HttpServer(endpoint) => (None, Some(*endpoint)),
            other => (Some(other), None),
        };
        Ok(Built {
            flow,
            input,
            input_id,
            workers,
            served,
            fingerprint,
        })
    }

    /// Binds every address the flows are served at (at start: a failure stops weft).
    async fn bind_all(&mut self, built: &[Built]) -> Result<(), EngineError> {
        let mut by_address: BTreeMap<SocketAddr, Vec<(http_server::Endpoint, Arc<RunFlow>)>> =
            BTreeMap::new();
        for flow in built {
            if let Some(endpoint) = &flow.served {
                by_address
                    .entry(endpoint.address)
                    .or_default()
                    .push((endpoint.clone(), flow.flow.clone()));
            }
        }
        for (address, endpoints) in by_address {
            self.listen(address, endpoints).await?;
        }
        Ok(())
    }

    async fn listen(
        &mut self,
        address: SocketAddr,
        endpoints: Vec<(http_server::Endpoint, Arc<RunFlow>)>,
    ) -> Result<(), EngineError> {
        let listener = bind(address, &endpoints).await?;
        self.serve_at(listener, address, endpoints);
        Ok(())
    }

    /// Serves `endpoints` on a bound `listener`.
    fn serve_at(
        &mut self,
        listener: tokio::net::TcpListener,
        address: SocketAddr,
        endpoints: Vec<(http_server::Endpoint, Arc<RunFlow>)>,
    ) {
        let what = described(&endpoints);
        tracing::info!(%address, endpoints = %what, "listening");
        // Flows sharing an address share its TLS and limits (the config loader checks they agree).
        let (tls, limits) = endpoints
            .first()
            .map(|(e, _)| (e.tls.clone(), e.limits.clone()))
            .unwrap_or_default();
        let table = http_server::Table::new(endpoints);
        let stop = self.shutdown.child_token();
        let (id, ended) = (self.take_id(), self.ended.clone());
        let flow = what.clone();
        let serving = tokio::spawn(http_server::serve_table(
            listener,
            table.clone(),
            tls.clone(),
            limits.clone(),
            stop.clone(),
        ));
        let handle = tokio::spawn(async move {
            let result = match serving.await {
                Ok(result) => result.map_err(|source| EngineError::Input {
                    flow,
                    component: "input.http_server".into(),
                    source,
                }),
                Err(e) => Err(EngineError::Panicked(e.to_string())),
            };
            let _ = ended.send((id, result));
        });
        self.listeners.insert(
            address,
            Listener {
                id,
                table,
                stop,
                handle,
                tls: tls.is_some(),
                limits,
            },
        );
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts a built flow: its reading input and, when durable, its delivery workers. An
    /// `http_server` flow's listener is the caller's business.
    fn start(&mut self, built: Built) {
        let Built {
            flow,
            input,
            input_id,
            workers,
            served,
            fingerprint,
        } = built;
        let mut set = JoinSet::new();
        let stop = CancellationToken::new();
        if let Some(queue) = flow.durable() {
            set.spawn(durable::upkeep(queue.clone(), stop.clone()));
            set.spawn(durable::work(flow.clone(), workers, stop.clone()));
        } else if flow.store().is_some() && input.as_ref().is_some_and(Input::uses_store) {
            // A direct flow whose input keeps dead letters delivers their replays.
            set.spawn(durable::replays(flow.clone(), stop.clone()));
        }
        let workers = (!set.is_empty()).then(|| Workers {
            stop,
            handle: tokio::spawn(async move { while set.join_next().await.is_some() {} }),
        });
        let reader = input.map(|input| {
            let id = self.take_id();
            let stop = self.shutdown.child_token();
            let tasks = TaskTracker::new();
            let feed = Feed {
                flow: flow.clone(),
                shutdown: stop.clone(),
                tasks: tasks.clone(),
            };
            let ended = self.ended.clone();
            let name = flow.name.to_string();
            // On a cluster, an input every node would read in full runs on one node at a time.
            let cluster = self
                .cluster
                .clone()
                .filter(|_| input.runs_once_in_a_cluster());
            let reading = tokio::spawn(async move {
                let Some(cluster) = cluster else {
                    return input.run(feed).await;
                };
                let flow = feed.flow.name.clone();
                let input = &input;
                cluster
                    .while_held(&flow, &feed.shutdown, |held| {
                        input.run(Feed {
                            shutdown: held,
                            ..feed.clone()
                        })
                    })
                    .await
            });
            let abort = reading.abort_handle();
            let handle = tokio::spawn(async move {
                let result = match reading.await {
                    Ok(result) => result.map_err(|source| EngineError::Input {
                        flow: name,
                        component: input_id,
                        source,
                    }),
                    Err(e) if e.is_cancelled() => Ok(()),
                    Err(e) => Err(EngineError::Panicked(e.to_string())),
                };
                let _ = ended.send((id, result));
            });
            self.live.insert(id);
            Reader {
                id,
                stop,
                tasks,
                handle,
                abort,
            }
        });
        let name = flow.name.to_string();
        self.flows.insert(
            name,
            Running {
                fingerprint,
                served: served.map(|e| (e.address, e)),
                flow,
                reader,
                workers,
            },
        );
    }

    /// Shows the running flows to the admin API, and their log levels to the log filter.
    fn publish(&self) {
        crate::telemetry::set_flow_levels(
            self.flows
                .iter()
                .filter_map(|(name, r)| r.flow.log_level().map(|level| (name.clone(), level))),
        );
        let flows = self
            .flows
            .iter()
            .map(|(name, r)| (name.clone(), r.flow.clone()))
            .collect();
        *self.registry.write().expect("registry lock") = flows;
    }

    fn input_ended(&mut self, id: u64, result: Result<(), EngineError>) {
        self.live.remove(&id);
        let retired = self.retired.remove(&id);
        if let Err(e) = result {
            tracing::error!(error = %e, "input stopped");
            // One a reload stopped was replaced; its error is not the run's.
            if !retired {
                self.summary.input_errors.push(e);
            }
        }
    }

    /// The endpoints an address serves now.
    fn endpoints_at(&self, address: SocketAddr) -> Vec<(http_server::Endpoint, Arc<RunFlow>)> {
        self.flows
            .values()
            .filter_map(|r| {
                let (at, endpoint) = r.served.as_ref()?;
                (*at == address).then(|| (endpoint.clone(), r.flow.clone()))
            })
            .collect()
    }

    /// Every input ended by itself: finish what is in flight, deliver what the store queues
    /// hold (unless told to stop first: it stays stored for the next run), then stop.
    async fn finish(&mut self) {
        for retiring in &self.retiring {
            retiring.wait().await;
        }
        for running in self.flows.values() {
            if let Some(reader) = &running.reader {
                reader.tasks.close();
                reader.tasks.wait().await;
            }
        }
        let queues_empty = async {
            for running in self.flows.values() {
                while let Some(queue) = running.flow.durable()
                    && !queue.is_drained().await
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tokio::select! {
            _ = queues_empty => {}
            _ = self.shutdown.cancelled() => {}
        }
        self.stop_workers().await;
        tracing::info!("all flows drained");
    }

    /// Shutdown: inputs stop (they were told by the shutdown token), messages in flight finish
    /// within `shutdown_timeout`, then the delivery workers stop.
    async fn drain(&mut self) -> Result<(), EngineError> {
        let mut waits = Vec::new();
        for (_, listener) in self.listeners.drain() {
            waits.push(tokio::spawn(async move {
                let _ = listener.handle.await;
            }));
        }
        for running in self.flows.values_mut() {
            if let Some(reader) = running.reader.take() {
                waits.push(tokio::spawn(retire_reader(
                    running.flow.name.to_string(),
                    Some(reader),
                )));
            }
        }
        for retiring in self.retiring.drain(..) {
            waits.push(tokio::spawn(async move { retiring.wait().await }));
        }
        let drained =
            tokio::time::timeout(self.shutdown_timeout, futures_util::future::join_all(waits))
                .await;
        if drained.is_err() {
            return Err(EngineError::DrainTimeout);
        }
        self.stop_workers().await;
        tracing::info!("all flows drained");
        Ok(())
    }

    async fn stop_workers(&mut self) {
        let mut handles = Vec::new();
        for running in self.flows.values_mut() {
            if let Some(workers) = running.workers.take() {
                workers.stop.cancel();
                handles.push(workers.handle);
            }
        }
        self.store_stop.cancel();
        // A worker finishes the message in its hands; one that does not in time leaves it
        // leased, and the next start delivers it again.
        let _ = tokio::time::timeout(
            self.shutdown_timeout,
            futures_util::future::join_all(handles),
        )
        .await;
    }
}

/// Stops a reading input and waits until what it took in is finished.
async fn retire_reader(flow: String, reader: Option<Reader>) {
    let Some(reader) = reader else {
        return;
    };
    reader.stop.cancel();
    if let Err(e) = reader.handle.await {
        tracing::error!(%flow, error = %e, "input task panicked");
    }
    reader.tasks.close();
    reader.tasks.wait().await;
}

/// Binds an address for `endpoints`.
async fn bind(
    address: SocketAddr,
    endpoints: &[(http_server::Endpoint, Arc<RunFlow>)],
) -> Result<tokio::net::TcpListener, EngineError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| EngineError::Bind {
            address,
            what: described(endpoints),
            source,
        })
}

fn described(endpoints: &[(http_server::Endpoint, Arc<RunFlow>)]) -> String {
    endpoints
        .iter()
        .map(|(e, f)| format!("flow `{}` {}", f.name, e.path))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives back the space of expired dedupe and idempotency keys now and then (they already read
/// as absent the moment they expire).
async fn sweep_expired_keys(store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        match store.kv_expire(crate::core::clock::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "expired keys removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove expired keys"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's futures are moved whole wherever they go (into a box, a join, a spawned
    /// task): one grown by the largest component's future is copied per message (a flow's
    /// delivery future was 16 KiB in release before the outputs' futures were boxed), and that
    /// copy once cost more than the mapping it carried. So the futures of steps and outputs that
    /// wait are boxed; this keeps it that way.
    #[tokio::test]
    async fn the_futures_a_message_moves_through_stay_small() {
        let yaml = r#"
flows:
  sizes:
    input: { stdin: {} }
    pipeline:
      - map: .a = 1
      - http: { url: "http://127.0.0.1:9/x" }
      - sql: { database: crm, query: "select 1" }
      - enrich:
          processors: [ { http: { url: "http://127.0.0.1:9/y" } } ]
          merge: .b = %enrichment
    outputs:
      - http_client: { url: "http://127.0.0.1:9/z" }
      - soap: { url: "http://127.0.0.1:9/soap", action: "urn:x", body: "<x/>" }
resources:
  sql:
    crm: { url: "postgres://127.0.0.1/test" }
"#;
        let loaded = crate::load::load_str(
            "sizes.yaml",
            yaml,
            &|_| None,
            &crate::clients::Shared::default(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let spec = loaded.flows.into_iter().next().expect("one flow");
        let message = crate::core::Message::new(crate::core::mapping::empty_object());
        // The boxed futures themselves: each is copied once per call, into its box.
        let mut boxed = Vec::new();
        for (_, output, _) in &spec.outputs {
            if let crate::outputs::Output::HttpClient(o) = output {
                let send = crate::core::Output::send(&**o, &message);
                boxed.push(("http_client send", std::mem::size_of_val(&send)));
            }
        }
        let mut trail = crate::core::Trail::default();
        let mut cx = crate::core::Context {
            flow: "sizes",
            store: None,
            trail: &mut trail,
            tap: None,
            split: None,
            reads_metadata: true,
        };
        for (_, step) in &spec.processors {
            if let crate::processors::Processor::Http(p) = step {
                let call = crate::core::Processor::process(&**p, message.clone(), &mut cx);
                boxed.push(("http step", std::mem::size_of_val(&call)));
            }
        }
        eprintln!("boxed futures: {boxed:?}");
        // Any step's future, as the pipeline holds it: the registry's, whichever the step.
        let step = crate::core::Processor::process(&spec.processors[0].1, message.clone(), &mut cx);
        let step_size = std::mem::size_of_val(&step);
        drop(step);
        let assembled = assemble(spec, None).await.expect("assembled");
        let flow = assembled.flow;
        let process = flow.process(message.clone());
        let process_size = std::mem::size_of_val(&process);
        drop(process);
        let mut trail = crate::core::Trail::default();
        let transform = flow.transform(message, &mut trail);
        let transform_size = std::mem::size_of_val(&transform);
        drop(transform);
        eprintln!(
            "a step {step_size} B, Flow::process {process_size} B, Flow::transform {transform_size} B"
        );
        // Was the size of the largest step's future (an `http` call's) before those were boxed.
        assert!(step_size <= 512, "a step's future: {step_size} B");
        // Copied into its box once per message: 4,944 B in the test build when it held a
        // signing key lookup, credentials and an interceptor inline; 1,840 B since.
        let (_, send_size) = boxed
            .iter()
            .find(|(what, _)| *what == "http_client send")
            .expect("the flow has an http_client output");
        assert!(*send_size <= 2048, "http_client send: {send_size} B");
        // 16 KiB (release) before the outputs' futures were boxed; 2,464 B in the test build
        // while the caller's `traceparent` scope held the pipeline's future twice; 1,072 B since.
        assert!(
            process_size <= 1536,
            "Flow::process future: {process_size} B"
        );
        assert!(
            transform_size <= 1024,
            "Flow::transform future: {transform_size} B"
        );
    }
}
