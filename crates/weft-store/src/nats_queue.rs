//! The queues and dead letters of a cluster's durable flows, on NATS JetStream, shared by every
//! node: any node accepts a message, any node delivers it, and a node that dies leaves nothing
//! behind that only it could deliver.
//!
//! Per flow, three streams (`weft_<cluster>_{q,r,d}_<flow>`), one subject per message id:
//! - **queue** (work-queue retention): accepting is one publish with `Nats-Msg-Id` = the
//!   message id, answered only after the stream stored it, so a client's retry of an accepted
//!   message is dropped by the server. One durable pull consumer (`work`) is shared by every
//!   node: a claim is a fetch, a delivery holds the message for the consumer's ack wait (the
//!   cluster's lease time), kept longer by progress acks while the node works on it, and a node
//!   that dies lets it go to another node when that lapses.
//! - **retry**: a failed attempt is re-published here with its new attempt count, history and
//!   due time, then the queue's copy is acked. Waiting retries hold no slot of the consumer
//!   (a NAK with a delay would, and a long outage of one endpoint would then stall the rest of
//!   the flow). Every node indexes the flow's retries by due time as they arrive (an ordered
//!   consumer), and a claim first moves those due back to the queue, each with a message id of
//!   its own so that two nodes moving the same one queue it once.
//! - **dead letters**: one message per id (a subject keeps its last message), so burying an id
//!   again replaces it; listing reads the stream, replay publishes to the queue and deletes.
//!
//! A flow ordered by key has no shared consumer: its queue is split into partitions (a subject
//! token `p<n>` before the id, `n` a hash of the key), each read by a consumer of its own that
//! lets one message out at a time. A failed attempt of such a message is sent back with a delay
//! (a NAK) so that it keeps its place, and its attempts and history wait in a fourth stream
//! (`s`, one message per id) until it is settled.
//!
//! A payload over [`BIG`] goes to an object store (`weft_<cluster>_bodies`) and the message
//! carries the object's name: a retry, a dead letter and a replay copy the name, a claim and a
//! listing read the object, and an ack (delivered) or a purge deletes it.
//!
//! A message's state travels in its body ([`Record`]): its id, metadata, attempts, history and
//! due time, then the payload. What the trait's contract says of SQLite bends here in three
//! places, all about time and identity: a claim's lease is the consumer's ack wait (the server's
//! clock), not the `lease` given; a rescheduled message comes back with another sequence
//! number; and depth counts bytes as the server stores them.

use super::nats_kv::remote;
use super::*;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;

/// The low bits of a handle ([`Queued::seq`]) are the message's sequence in its flow's queue
/// stream; the bits above name the flow (its place in this process's list).
const SEQ_BITS: u32 = 40;

/// Longest a node keeps a claimed message without a verdict: past it, the engine gave up on
/// the delivery (its own lease is ten minutes) and the message is given back.
const MAX_HOLD: Duration = Duration::from_secs(600);

/// Lines of history a message keeps (the first and the latest), so that a message retried for
/// weeks stays well under NATS' message size.
const HISTORY_KEPT: usize = 100;

/// Retries moved back to the queue by one claim, at most: a claim stays short when a burst
/// comes due at once.
const MOVES_PER_CLAIM: usize = 256;

/// Payloads larger than this go to the object store, and the message carries their name: NATS
/// refuses a message over its `max_payload` (1 MiB by default).
const BIG: usize = 512 * 1024;

/// How long a pass over a stream waits for its next message before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The queues of every durable flow of one cluster; see the module doc.
pub struct NatsQueues {
    js: jetstream::Context,
    /// `weft_<cluster>`: the prefix of stream names.
    streams: String,
    /// `weft.<cluster>`: the prefix of subjects.
    subjects: String,
    ack_wait: Duration,
    replicas: usize,
    /// Whether it makes the streams and consumers it needs (a node) or only opens them (a
    /// tool).
    create: bool,
    flows: Mutex<Vec<Arc<FlowStreams>>>,
    opening: tokio::sync::Mutex<()>,
    /// The object store of big payloads (`weft_<cluster>_bodies`), opened when first needed.
    bodies: tokio::sync::OnceCell<jetstream::object_store::ObjectStore>,
    /// Names objects uniquely within this process.
    objects: std::sync::atomic::AtomicU64,
    /// Messages this node claimed and has not settled yet, by handle.
    held: Arc<Mutex<HashMap<i64, Held>>>,
    /// Flows ordered by key, and their partitions ([`NatsQueues::declare_ordered`]).
    ordered: Mutex<HashMap<String, u32>>,
    progress: tokio::task::AbortHandle,
}

/// A delivery this node holds, and the retry state an ordered message carries beside it.
#[derive(Clone)]
struct Held {
    message: jetstream::Message,
    /// When this node claimed it: held longer than [`MAX_HOLD`], it is given back.
    since: std::time::Instant,
    state: Option<Record>,
    /// The partition it came from, on an ordered flow.
    partition: Option<usize>,
}

struct FlowStreams {
    index: usize,
    name: String,
    token: String,
    queue: stream::Stream,
    retry: stream::Stream,
    dlq: stream::Stream,
    /// The consumer every node shares, for a flow not ordered by key.
    work: Option<consumer::PullConsumer>,
    /// For a flow ordered by key: a consumer per partition, each letting one message out at a
    /// time; and the stream of the retry state of the messages they hold.
    partitions: Vec<consumer::PullConsumer>,
    state: Option<stream::Stream>,
    /// Where the next claim starts among the partitions, so that all get their turn.
    turn: std::sync::atomic::AtomicUsize,
    /// Per partition, until when (wall-clock ms) this node knows it lets nothing out: it sent
    /// back the message the partition holds, with a delay.
    resting: Mutex<Vec<i64>>,
    /// The flow's retries by due time: `(due_ms, sequence in the retry stream)`.
    due: Arc<Mutex<BTreeSet<(i64, u64)>>>,
    /// The task indexing the retries, started by the first claim (a tool that only looks at
    /// the queue starts none).
    indexer: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for FlowStreams {
    fn drop(&mut self) {
        if let Some(indexer) = self.indexer.get() {
            indexer.abort();
        }
    }
}

impl Drop for NatsQueues {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle(index: usize, seq: u64) -> i64 {
    ((index as i64) << SEQ_BITS) | seq as i64
}

fn parts(handle: i64) -> (usize, u64) {
    (
        (handle >> SEQ_BITS) as usize,
        (handle & ((1 << SEQ_BITS) - 1)) as u64,
    )
}

impl NatsQueues {
    /// The queues of cluster `cluster` on `js`: messages a node claimed stay its own for
    /// `ack_wait` after its last sign of life (a progress ack every third of it while it
    /// works); streams are made with `replicas` copies.
    pub fn new(
        js: jetstream::Context,
        cluster: &str,
        ack_wait: Duration,
        replicas: usize,
    ) -> NatsQueues {
        let held: Arc<Mutex<HashMap<i64, Held>>> = Default::default();
        let watched = Arc::downgrade(&held);
        let progress = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ack_wait / 3).await;
                let Some(held) = watched.upgrade() else {
                    return;
                };
                // A delivery held past MAX_HOLD was given up on by the engine without a verdict
                // (a store error it stopped retrying): given back, so that another attempt
                // (and on an ordered flow, the rest of its partition) is not held up for ever.
                let (kept, given_back): (Vec<_>, Vec<_>) = {
                    let mut held = lock(&held);
                    let stale: Vec<i64> = held
                        .iter()
                        .filter(|(_, h)| h.since.elapsed() > MAX_HOLD)
                        .map(|(seq, _)| *seq)
                        .collect();
                    let given_back: Vec<_> = stale
                        .iter()
                        .filter_map(|seq| held.remove(seq))
                        .map(|h| h.message)
                        .collect();
                    (
                        held.values().map(|h| h.message.clone()).collect(),
                        given_back,
                    )
                };
                drop(held);
                for message in given_back {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                for message in kept {
                    // One that fails is redelivered after the ack wait: at least once.
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        })
        .abort_handle();
        NatsQueues {
            js,
            streams: format!("weft_{cluster}"),
            subjects: format!("weft.{cluster}"),
            ack_wait,
            replicas: replicas.max(1),
            create: true,
            flows: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            bodies: tokio::sync::OnceCell::new(),
            objects: Default::default(),
            held,
            ordered: Mutex::new(HashMap::new()),
            progress,
        }
    }

    /// The same for a tool: it opens the streams and consumers the nodes made and makes none.
    pub fn looking(mut self) -> NatsQueues {
        self.create = false;
        self
    }

    /// Declares flow `flow` ordered by key over `partitions` partitions, before its first use:
    /// a key's messages go to one partition, whose consumer lets one message out at a time,
    /// held through its retries (a NAK with a delay keeps its place), so they are delivered in
    /// the order they were accepted, whichever node delivers them.
    pub fn declare_ordered(&self, flow: &str, partitions: u32) {
        lock(&self.ordered).insert(flow.to_string(), partitions.max(1));
    }

    fn known(&self, name: &str) -> Option<Arc<FlowStreams>> {
        lock(&self.flows).iter().find(|f| f.name == name).cloned()
    }

    fn by_handle(&self, handle: i64) -> Option<(Arc<FlowStreams>, u64)> {
        let (index, seq) = parts(handle);
        lock(&self.flows).get(index).map(|f| (f.clone(), seq))
    }

    /// `flow`'s streams and consumer, made if they are not there yet.
    async fn flow(&self, name: &str) -> Result<Arc<FlowStreams>, StoreError> {
        if let Some(flow) = self.known(name) {
            return Ok(flow);
        }
        let _one = self.opening.lock().await;
        if let Some(flow) = self.known(name) {
            return Ok(flow);
        }
        let token = key_token(name);
        let queue = self.stream("q", &token, stream::RetentionPolicy::WorkQueue, 0);
        let retry = self.stream("r", &token, stream::RetentionPolicy::Limits, 0);
        let dlq = self.stream("d", &token, stream::RetentionPolicy::Limits, 1);
        let (queue, retry, dlq) = (queue.await?, retry.await?, dlq.await?);
        // What the flow's config declared, else what its queue has (a tool's view).
        let declared = lock(&self.ordered).get(name).copied();
        let existing = partitions_of(&queue).await?;
        let ordered = match (declared, existing) {
            (Some(want), Some(have)) if want != have => {
                return Err(StoreError::Cluster(format!(
                    "flow {name}: its queue on the cluster has {have} partitions and `ordering.partitions` says {want}: keep {have}, or drain the queue and delete stream {} to change it",
                    queue.cached_info().config.name
                )));
            }
            (None, Some(have)) => Some(have),
            (declared, _) => declared,
        };
        let consumer =
            |name: String, filter: String, at_once: i64, what: &str| consumer::pull::Config {
                durable_name: Some(name),
                description: Some(format!("weft: {what}, shared by every node")),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_ack_pending: at_once,
                filter_subject: filter,
                ..Default::default()
            };
        let (mut work, mut partitions, mut state) = (None, Vec::new(), None);
        match ordered {
            None => {
                let config = consumer("work".into(), String::new(), 100_000, "the flow's delivery");
                if !self.create {
                    work = queue.get_consumer("work").await.ok();
                } else {
                    work = Some(queue.get_or_create_consumer("work", config).await.map_err(|e| {
                    StoreError::Cluster(format!(
                        "flow {name}: its queue's consumer: {e} (was the flow ordered by key before? drain its queue, then delete the queue's consumers or stream to change that)"
                    ))
                })?);
                }
            }
            Some(count) => {
                for p in 0..count {
                    let filter = format!("{}.q.{token}.p{p}.*", self.subjects);
                    let config = consumer(
                        format!("p{p}"),
                        filter,
                        1,
                        "one partition's delivery, in order",
                    );
                    if !self.create {
                        partitions
                            .push(queue.get_consumer(&format!("p{p}")).await.map_err(remote)?);
                        continue;
                    }
                    partitions.push(
                        queue
                            .get_or_create_consumer(&format!("p{p}"), config)
                            .await
                            .map_err(|e| {
                                StoreError::Cluster(format!(
                                    "flow {name}: partition {p}'s consumer: {e} (did the flow have other partitions, or none, before? its queue must be empty to change that)"
                                ))
                            })?,
                    );
                }
                state = Some(
                    self.stream("s", &token, stream::RetentionPolicy::Limits, 1)
                        .await?,
                );
            }
        }
        let due = Arc::new(Mutex::new(BTreeSet::new()));
        let mut flows = lock(&self.flows);
        let flow = Arc::new(FlowStreams {
            index: flows.len(),
            name: name.to_string(),
            token,
            queue,
            retry,
            dlq,
            work,
            partitions,
            state,
            turn: Default::default(),
            resting: Mutex::new(vec![0; count_of(ordered)]),
            due,
            indexer: std::sync::OnceLock::new(),
        });
        flows.push(flow.clone());
        Ok(flow)
    }

    async fn stream(
        &self,
        kind: &str,
        token: &str,
        retention: stream::RetentionPolicy,
        per_subject: i64,
    ) -> Result<stream::Stream, StoreError> {
        let name = format!("{}_{kind}_{}", self.streams, token.replace('/', "=2F"));
        if !self.create {
            // A tool looks at what the nodes made, and makes nothing (a stream made here
            // would have a tool's settings, not the cluster's).
            return self.js.get_stream(&name).await.map_err(|e| {
                StoreError::Cluster(format!(
                    "no stream {name} on the cluster ({e}): has a node run this flow?"
                ))
            });
        }
        let what = match kind {
            "q" => "queue",
            "r" => "retries",
            "s" => "ordered messages' retry state",
            _ => "dead letters",
        };
        self.js
            .get_or_create_stream(stream::Config {
                // A stream name may not hold `/`: the token's escape for it reads back the same.
                name,
                description: Some(format!("weft: a durable flow's {what}")),
                // The queue's subjects may carry a partition before the id.
                subjects: vec![format!("{}.{kind}.{token}.>", self.subjects)],
                retention,
                max_messages_per_subject: per_subject,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(remote)
    }

    fn subject(&self, kind: &str, flow: &FlowStreams, id: &str) -> String {
        format!("{}.{kind}.{}.{}", self.subjects, flow.token, key_token(id))
    }

    /// Where `record` waits in its flow's queue: in its key's partition when the flow is
    /// ordered (one without a key by its id, spread like the rest).
    fn queue_subject(&self, flow: &FlowStreams, record: &Record) -> String {
        if flow.partitions.is_empty() {
            return self.subject("q", flow, &record.id);
        }
        let key = record.order_key.as_deref().unwrap_or(&record.id);
        let p = partition(key, flow.partitions.len() as u32);
        format!(
            "{}.q.{}.p{p}.{}",
            self.subjects,
            flow.token,
            key_token(&record.id)
        )
    }

    /// Publishes `record` and waits until the stream stored it; its sequence there.
    async fn publish(
        &self,
        subject: String,
        record: &Record,
        message_id: Option<String>,
    ) -> Result<u64, StoreError> {
        if record.body.is_none() && record.payload.len() > BIG {
            let name = format!(
                "{}.{}.{}",
                record.id,
                wall_ms(),
                self.objects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            self.bodies()
                .await?
                .put(name.as_str(), &mut record.payload.as_slice())
                .await
                .map_err(remote)?;
            let stored = Record {
                body: Some(name.clone()),
                payload: Vec::new(),
                ..record.clone()
            };
            // After an error the record may still have been stored (an ack that timed out):
            // the object stays, at worst unused.
            return Box::pin(self.publish(subject, &stored, message_id)).await;
        }
        let body = record.encode();
        let max = self.js.client().max_payload();
        // The subject and headers travel too.
        if max > 0 && body.len() + 512 > max {
            return Err(StoreError::TooLarge {
                bytes: body.len(),
                max,
            });
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(body.into());
        if let Some(id) = message_id {
            publish = publish.message_id(id);
        }
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(remote)?
            .await
            .map_err(remote)?;
        Ok(ack.sequence)
    }

    /// The object store of big payloads, made if it is not there yet.
    async fn bodies(&self) -> Result<&jetstream::object_store::ObjectStore, StoreError> {
        use jetstream::object_store;
        self.bodies
            .get_or_try_init(|| async {
                let bucket = format!("{}_bodies", self.streams);
                if let Ok(found) = self.js.get_object_store(&bucket).await {
                    return Ok(found);
                }
                let made = self
                    .js
                    .create_object_store(object_store::Config {
                        bucket: bucket.clone(),
                        description: Some("weft: durable messages' big payloads".into()),
                        storage: stream::StorageType::File,
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await;
                match made {
                    Ok(made) => Ok(made),
                    // Another node made it first.
                    Err(_) => self.js.get_object_store(&bucket).await.map_err(remote),
                }
            })
            .await
    }

    /// The payload kept in object `name`; `None` if it is gone.
    async fn read_body(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let mut object = match self.bodies().await?.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(remote(e)),
        };
        let mut payload = Vec::new();
        object.read_to_end(&mut payload).await.map_err(remote)?;
        Ok(Some(payload))
    }

    /// Deletes object `name`, once no message refers to it; one left behind costs space only.
    async fn forget_body(&self, name: &str) {
        if let Ok(bodies) = self.bodies().await
            && let Err(e) = bodies.delete(name).await
        {
            tracing::debug!(object = name, error = %e, "could not delete a message's payload object");
        }
    }

    /// The record of queued message `handle`, and the delivery this node holds of it if any;
    /// `None` when it is not queued (settled already, or never was).
    async fn take(
        &self,
        handle: i64,
    ) -> Result<Option<(Arc<FlowStreams>, Record, Option<Held>)>, StoreError> {
        let Some((flow, seq)) = self.by_handle(handle) else {
            return Ok(None);
        };
        let held = lock(&self.held).get(&handle).cloned();
        let body = match &held {
            Some(held) => held.message.payload.clone(),
            None => match flow.queue.get_raw_message(seq).await {
                Ok(message) => message.payload,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(e) => return Err(remote(e)),
            },
        };
        let mut record = Record::decode(&body);
        if let Some(state) = held.as_ref().and_then(|h| h.state.as_ref()) {
            record.take_state(state);
        }
        Ok(Some((flow, record, held)))
    }

    /// Removes queued message `handle` once its next state is stored elsewhere: acks the
    /// delivery this node holds, or deletes the message outright.
    async fn settle(
        &self,
        handle: i64,
        flow: &FlowStreams,
        held: Option<Held>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let settled = match &held {
            Some(held) => {
                held.message.double_ack().await.map_err(remote)?;
                lock(&self.held).remove(&handle);
                true
            }
            None => delete(&flow.queue, parts(handle).1).await?,
        };
        if let (Some(state), Some(Held { state: Some(_), .. })) = (&flow.state, &held) {
            state
                .purge()
                .filter(self.subject("s", flow, id))
                .await
                .map_err(remote)?;
        }
        Ok(settled)
    }

    /// Moves `flow`'s retries due by `now_ms` back to its queue.
    async fn move_due(&self, flow: &FlowStreams, now_ms: i64) -> Result<(), StoreError> {
        for _ in 0..MOVES_PER_CLAIM {
            let next = {
                let mut due = lock(&flow.due);
                match due.first() {
                    Some(&(at, _)) if at <= now_ms => due.pop_first(),
                    _ => return Ok(()),
                }
            };
            let Some((at, seq)) = next else {
                return Ok(());
            };
            // Another node may have moved it already: only one still there is moved.
            let stored = match flow.retry.get_raw_message(seq).await {
                Ok(stored) => stored,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => {
                    lock(&flow.due).insert((at, seq));
                    return Err(remote(e));
                }
            };
            let record = Record::decode(&stored.payload);
            let moved = self
                .publish(
                    self.queue_subject(flow, &record),
                    &record,
                    Some(format!("{}.m{seq}", record.id)),
                )
                .await;
            if let Err(e) = moved {
                lock(&flow.due).insert((at, seq));
                return Err(e);
            }
            delete(&flow.retry, seq).await?;
        }
        Ok(())
    }

    /// The flows that have a queue on the cluster (made by any node), by name.
    async fn flow_names(&self) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{}_q_", self.streams);
        let mut names = Vec::new();
        let mut listing = self.js.stream_names();
        while let Some(name) = listing.next().await {
            let name = name.map_err(remote)?;
            if let Some(flow) = name.strip_prefix(&prefix).and_then(token_text) {
                names.push(flow);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The dead letters of the flows `filter` names (every flow when it names none) that match
    /// it, in a listing's order, each with its sequence in its flow's stream.
    async fn matching(&self, filter: &DlqFilter) -> Result<Vec<Found>, StoreError> {
        let names = match &filter.flow {
            Some(flow) => vec![flow.clone()],
            None => self.flow_names().await?,
        };
        let mut all = Vec::new();
        for name in names {
            let flow = self.flow(&name).await?;
            for (seq, mut record) in read_all(&flow.dlq).await? {
                let (order_key, body) = (record.order_key.take(), record.body.take());
                all.push(Found {
                    flow: flow.clone(),
                    seq,
                    letter: record.into_letter(&flow.name),
                    order_key,
                    body,
                });
            }
        }
        all.sort_by(|a, b| {
            (a.letter.failed_at_ms, &a.letter.id).cmp(&(b.letter.failed_at_ms, &b.letter.id))
        });
        let after = match &filter.after {
            Some(id) => match all.iter().find(|f| &f.letter.id == id) {
                Some(f) => Some((f.letter.failed_at_ms, f.letter.id.clone())),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let mut matching: Vec<_> = all
            .into_iter()
            .filter(|Found { letter: l, .. }| {
                filter.id.as_ref().is_none_or(|id| &l.id == id)
                    && filter.since_ms.is_none_or(|t| l.failed_at_ms >= t)
                    && filter.until_ms.is_none_or(|t| l.failed_at_ms <= t)
                    && filter
                        .reason
                        .as_ref()
                        .is_none_or(|r| l.failure.reason.contains(r.as_str()))
                    && filter
                        .status
                        .is_none_or(|s| l.failure.last_status == Some(s))
                    && after
                        .as_ref()
                        .is_none_or(|(t, id)| (l.failed_at_ms, &l.id) > (*t, id))
            })
            .collect();
        if let Some(first) = filter.first {
            matching.truncate(first as usize);
        }
        Ok(matching)
    }

    /// Puts dead letters back on their queues, `edit` replacing the payload and the replay's
    /// history line; how many.
    async fn replay_letters(
        &self,
        filter: &DlqFilter,
        now_ms: i64,
        edit: Option<(&[u8], String)>,
    ) -> Result<u64, StoreError> {
        let mut replayed = 0;
        for found in self.matching(filter).await? {
            let Found {
                flow,
                seq,
                letter,
                order_key,
                body,
            } = found;
            let mut history = letter.history;
            history.push(undone(
                letter.failed_at_ms,
                letter.attempts,
                &letter.failure,
            ));
            // An edited payload replaces the one kept in the object store, if any.
            let (payload, body, replaced) = match &edit {
                Some((payload, note)) => {
                    history.push(note.clone());
                    (payload.to_vec(), None, body)
                }
                None => {
                    history.push(format!(r#"{{"at":{now_ms},"outcome":"replayed"}}"#));
                    (letter.payload, body, None)
                }
            };
            let record = Record {
                id: letter.id,
                order_key,
                body,
                metadata: letter.metadata,
                payload,
                enqueued_at_ms: now_ms,
                due_ms: now_ms,
                history,
                ..Default::default()
            };
            self.publish(
                self.queue_subject(&flow, &record),
                &record,
                Some(format!("{}.p{seq}", record.id)),
            )
            .await?;
            delete(&flow.dlq, seq).await?;
            if let Some(name) = replaced {
                self.forget_body(&name).await;
            }
            replayed += 1;
        }
        Ok(replayed)
    }
}

/// A dead letter found by [`NatsQueues::matching`], with what its record keeps beside it.
struct Found {
    flow: Arc<FlowStreams>,
    /// Its sequence in the flow's dead-letter stream.
    seq: u64,
    letter: DeadLetter,
    order_key: Option<String>,
    /// Its payload's object, when it is big.
    body: Option<String>,
}

/// The line a replay adds for the failure it undid, as the SQLite store writes it.
fn undone(failed_at_ms: i64, attempts: u32, failure: &Failure) -> String {
    let status = failure
        .last_status
        .map_or("null".to_string(), |s| s.to_string());
    format!(
        r#"{{"at":{failed_at_ms},"attempt":{attempts},"outcome":"dead_lettered","status":{status},"error":{}}}"#,
        json_string(&failure.reason.replace('\n', " "))
    )
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How many partitions a flow's queue has (its consumers `p0`, `p1`, …), if it is ordered.
async fn partitions_of(queue: &stream::Stream) -> Result<Option<u32>, StoreError> {
    let mut names = queue.consumer_names();
    let mut count = 0;
    while let Some(name) = names.next().await {
        let name = name.map_err(remote)?;
        if name
            .strip_prefix('p')
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            count += 1;
        }
    }
    Ok((count > 0).then_some(count))
}

fn count_of(partitions: Option<u32>) -> usize {
    partitions.unwrap_or(0) as usize
}

/// How long a claim waits for a partition another node may be holding: the server keeps a
/// fetch from a partition at its one message in delivery until that message is settled.
const PARTITION_WAIT: Duration = Duration::from_millis(20);

/// Up to `max` messages `consumer` has now (none if it has none: no waiting).
async fn fetch(
    consumer: &consumer::PullConsumer,
    max: usize,
    wait: Option<Duration>,
) -> Result<Vec<jetstream::Message>, StoreError> {
    let mut request = consumer.fetch().max_messages(max);
    if let Some(wait) = wait {
        request = request.expires(wait);
    }
    let mut batch = request.messages().await.map_err(remote)?;
    let mut fetched = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => fetched.push(message),
            // Those fetched before are this node's now; the rest stay for the next claim.
            Err(e) if fetched.is_empty() => return Err(remote(e)),
            Err(_) => break,
        }
    }
    Ok(fetched)
}

/// Deletes message `seq` of `stream`: `false` when it is not there.
async fn delete(stream: &stream::Stream, seq: u64) -> Result<bool, StoreError> {
    use async_nats::jetstream::stream::DeleteMessageErrorKind;
    match stream.delete_message(seq).await {
        Ok(deleted) => Ok(deleted),
        Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => Ok(false),
        Err(e) => Err(remote(e)),
    }
}

/// Every message of `stream`, in one pass (an ordered consumer), with its sequence.
async fn read_all(stream: &stream::Stream) -> Result<Vec<(u64, Record)>, StoreError> {
    let mut stream = stream.clone();
    if stream.info().await.map_err(remote)?.state.messages == 0 {
        return Ok(Vec::new());
    }
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .map_err(remote)?;
    let mut messages = reader.messages().await.map_err(remote)?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| remote("reading a stream timed out"))?;
        let Some(message) = next else {
            return Ok(out);
        };
        let message = message.map_err(remote)?;
        let info = message.info().map_err(remote)?;
        let (seq, last) = (info.stream_sequence, info.pending == 0);
        out.push((seq, Record::decode(&message.payload)));
        if last {
            return Ok(out);
        }
    }
}

/// Keeps `due` up to date with the retries of one flow's stream, for as long as it runs.
async fn index_retries(retry: stream::Stream, due: Arc<Mutex<BTreeSet<(i64, u64)>>>) {
    loop {
        let reader = retry
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await;
        if let Ok(reader) = reader
            && let Ok(mut messages) = reader.messages().await
        {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        if let Ok(info) = message.info() {
                            let record = Record::decode(&message.payload);
                            lock(&due).insert((record.due_ms, info.stream_sequence));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the retries again");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A message as the streams keep it: its state, then its payload. Each field is a four-byte
/// length and the bytes; numbers are decimal text; an optional text is empty when absent and
/// `=` + the text when present. A body weft did not write reads as a message of that payload
/// whose id says so (its delivery dead-letters it as unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    /// The object holding the payload, when it is too big to travel in the message (the
    /// payload is then empty here).
    body: Option<String>,
    id: String,
    /// Its ordering key, on a flow ordered by key.
    order_key: Option<String>,
    metadata: Vec<u8>,
    payload: Vec<u8>,
    enqueued_at_ms: i64,
    attempts: u32,
    due_ms: i64,
    last_error: Option<String>,
    history: Vec<String>,
    /// A dead letter's: when it failed, and why.
    failed: Option<(i64, Failure)>,
}

const VERSION: &[u8] = b"weft1";

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

fn optional(text: Option<&str>) -> Vec<u8> {
    text.map(|t| format!("={t}").into_bytes())
        .unwrap_or_default()
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.metadata.len() + 128);
        let (failed_at, failure) = match &self.failed {
            Some((at, failure)) => (at.to_string(), Some(failure)),
            None => (String::new(), None),
        };
        put(&mut out, VERSION);
        put(&mut out, &optional(self.body.as_deref()));
        put(&mut out, self.id.as_bytes());
        put(&mut out, &optional(self.order_key.as_deref()));
        put(&mut out, self.enqueued_at_ms.to_string().as_bytes());
        put(&mut out, self.attempts.to_string().as_bytes());
        put(&mut out, self.due_ms.to_string().as_bytes());
        put(&mut out, &optional(self.last_error.as_deref()));
        put(&mut out, self.history.join("\n").as_bytes());
        put(&mut out, &self.metadata);
        put(&mut out, failed_at.as_bytes());
        put(&mut out, failure.map_or(&[][..], |f| f.reason.as_bytes()));
        put(
            &mut out,
            failure
                .and_then(|f| f.last_status)
                .map(|s| s.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        put(
            &mut out,
            &optional(failure.and_then(|f| f.response_excerpt.as_deref())),
        );
        out.extend_from_slice(&self.payload);
        out
    }

    /// The payload's object of a stored record, read without copying the rest.
    fn body_of(stored: &[u8]) -> Option<String> {
        let field = |at: usize| -> Option<(&[u8], usize)> {
            let len = u32::from_be_bytes(stored.get(at..at + 4)?.try_into().ok()?) as usize;
            Some((stored.get(at + 4..at + 4 + len)?, at + 4 + len))
        };
        let (version, next) = field(0)?;
        if version != VERSION {
            return None;
        }
        let (body, _) = field(next)?;
        let name = body.strip_prefix(b"=")?;
        std::str::from_utf8(name).ok().map(str::to_string)
    }

    fn decode(body: &[u8]) -> Record {
        Record::parse(body).unwrap_or_else(|| Record {
            id: "unreadable".into(),
            payload: body.to_vec(),
            ..Default::default()
        })
    }

    fn parse(body: &[u8]) -> Option<Record> {
        let mut rest = body;
        let mut take = || -> Option<&[u8]> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let field = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(field)
        };
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
        let optional = |b: &[u8]| -> Option<Option<String>> {
            match b.split_first() {
                None => Some(None),
                Some((b'=', t)) => Some(Some(text(t)?)),
                Some(_) => None,
            }
        };
        if take()? != VERSION {
            return None;
        }
        let body = optional(take()?)?;
        let id = text(take()?)?;
        let order_key = optional(take()?)?;
        let enqueued_at_ms = text(take()?)?.parse().ok()?;
        let attempts = text(take()?)?.parse().ok()?;
        let due_ms = text(take()?)?.parse().ok()?;
        let last_error = optional(take()?)?;
        let history = text(take()?)?;
        let metadata = take()?.to_vec();
        let failed_at = text(take()?)?;
        let reason = text(take()?)?;
        let status = text(take()?)?;
        let excerpt = optional(take()?)?;
        let failed = if failed_at.is_empty() {
            None
        } else {
            Some((
                failed_at.parse().ok()?,
                Failure {
                    reason,
                    last_status: if status.is_empty() {
                        None
                    } else {
                        Some(status.parse().ok()?)
                    },
                    response_excerpt: excerpt,
                },
            ))
        };
        Some(Record {
            body,
            id,
            order_key,
            metadata,
            payload: rest.to_vec(),
            enqueued_at_ms,
            attempts,
            due_ms,
            last_error,
            history: history
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            failed,
        })
    }

    /// Takes the retry state (attempts, history, last error) of `state`.
    fn take_state(&mut self, state: &Record) {
        self.attempts = state.attempts;
        self.history = state.history.clone();
        self.last_error = state.last_error.clone();
    }

    fn queued(self, seq: i64, flow: &str) -> Queued {
        Queued {
            seq,
            flow: flow.to_string(),
            id: self.id,
            payload: self.payload,
            metadata: self.metadata,
            enqueued_at_ms: self.enqueued_at_ms,
            attempts: self.attempts,
            last_error: self.last_error,
            history: self.history,
        }
    }

    fn into_letter(self, flow: &str) -> DeadLetter {
        let (failed_at_ms, failure) = self.failed.unwrap_or_default();
        DeadLetter {
            id: self.id,
            flow: flow.to_string(),
            payload: self.payload,
            metadata: self.metadata,
            enqueued_at_ms: self.enqueued_at_ms,
            failed_at_ms,
            attempts: self.attempts,
            failure,
            history: self.history,
        }
    }
}

/// The partition of `key` among `count`: FNV-1a, the same on every node and every build.
fn partition(key: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(count.max(1))) as u32
}

/// Milliseconds since the epoch by this machine's clock.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Keeps [`HISTORY_KEPT`] lines: the first ten (how it began) and the latest.
fn cap_history(history: &mut Vec<String>) {
    if history.len() > HISTORY_KEPT {
        let cut = history.len() - HISTORY_KEPT;
        history.drain(10..10 + cut);
    }
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

fn excerpt_cut(mut failure: Failure) -> Failure {
    if let Some(excerpt) = &mut failure.response_excerpt
        && excerpt.len() > EXCERPT_MAX
    {
        let mut cut = EXCERPT_MAX;
        while !excerpt.is_char_boundary(cut) {
            cut -= 1;
        }
        excerpt.truncate(cut);
    }
    failure
}

/// Where one durable flow's queue stands, for `weft cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLag {
    pub flow: String,
    /// Messages no node has taken yet (the consumer's lag).
    pub waiting: u64,
    /// Messages a node holds, being delivered.
    pub in_delivery: u64,
    /// Messages waiting for a retry.
    pub retries: u64,
    pub dead_letters: u64,
}

impl NatsQueues {
    /// Every durable flow's queue on the cluster, by flow.
    pub async fn lag(&self) -> Result<Vec<QueueLag>, StoreError> {
        let mut lags = Vec::new();
        for name in self.flow_names().await? {
            let flow = self.flow(&name).await?;
            let (mut waiting, mut in_delivery) = (0, 0);
            for consumer in flow.work.iter().chain(&flow.partitions) {
                let mut consumer = consumer.clone();
                let info = consumer.info().await.map_err(remote)?;
                waiting += info.num_pending;
                in_delivery += info.num_ack_pending as u64;
            }
            let mut retry = flow.retry.clone();
            let retries = retry.info().await.map_err(remote)?.state.messages;
            let mut dlq = flow.dlq.clone();
            let dead_letters = dlq.info().await.map_err(remote)?.state.messages;
            lags.push(QueueLag {
                flow: name,
                waiting,
                in_delivery,
                retries,
                dead_letters,
            });
        }
        Ok(lags)
    }
}

/// The queue operations of [`Backend`], as [`NatsKv`](super::NatsKv) hands them on.
impl NatsQueues {
    pub(crate) async fn enqueue(
        &self,
        flow: &str,
        id: &str,
        payload: &[u8],
        metadata: &[u8],
        order_key: Option<&str>,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let flow = self.flow(flow).await?;
        if order_key.is_some() && flow.partitions.is_empty() {
            return Err(StoreError::Cluster(format!(
                "flow {}: a message with an ordering key on a queue not declared ordered",
                flow.name
            )));
        }
        let record = Record {
            id: id.to_string(),
            order_key: order_key.map(str::to_string),
            metadata: metadata.to_vec(),
            payload: payload.to_vec(),
            enqueued_at_ms: now_ms,
            due_ms: now_ms,
            ..Default::default()
        };
        let seq = self
            .publish(
                self.queue_subject(&flow, &record),
                &record,
                Some(id.to_string()),
            )
            .await?;
        Ok(handle(flow.index, seq))
    }

    pub(crate) async fn claim(
        &self,
        flow: &str,
        now_ms: i64,
        limit: u32,
        // A delivery lapses after the consumer's ack wait (see the module doc).
        _lease: Duration,
    ) -> Result<Vec<Queued>, StoreError> {
        let flow = self.flow(flow).await?;
        flow.indexer.get_or_init(|| {
            tokio::spawn(index_retries(flow.retry.clone(), flow.due.clone())).abort_handle()
        });
        self.move_due(&flow, now_ms).await?;
        let limit = limit.max(1) as usize;
        let fetched = match &flow.work {
            Some(work) => fetch(work, limit, None)
                .await?
                .into_iter()
                .map(|m| (m, None))
                .collect(),
            None => {
                // Each partition lets one message out at a time: one from each free one, as
                // many as asked for, starting where the last claim stopped. Those this node
                // holds or sent back are not free.
                let count = flow.partitions.len();
                let busy: std::collections::HashSet<usize> = lock(&self.held)
                    .iter()
                    .filter(|(h, _)| parts(**h).0 == flow.index)
                    .filter_map(|(_, held)| held.partition)
                    .collect();
                let now = wall_ms();
                let resting = lock(&flow.resting).clone();
                let start = flow.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let free: Vec<usize> = (0..count)
                    .map(|i| (start + i) % count)
                    .filter(|p| !busy.contains(p) && resting[*p] <= now)
                    .take(limit)
                    .collect();
                let partitions = &flow.partitions;
                let picks = free.iter().map(|&p| async move {
                    fetch(&partitions[p], 1, Some(PARTITION_WAIT))
                        .await
                        .map(|messages| (p, messages))
                });
                let mut fetched = Vec::new();
                let mut failed = None;
                for batch in futures_util::future::join_all(picks).await {
                    match batch {
                        Ok((p, messages)) => {
                            fetched.extend(messages.into_iter().map(|m| (m, Some(p))))
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                match failed {
                    Some(e) if fetched.is_empty() => return Err(e),
                    _ => fetched,
                }
            }
        };
        let mut claimed = Vec::new();
        for (message, partition) in fetched {
            let Ok(info) = message.info() else {
                // Not a message this consumer could have sent: given back, not held.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            let (seq, delivered) = (handle(flow.index, info.stream_sequence), info.delivered);
            let mut record = Record::decode(&message.payload);
            // An ordered message delivered before may have retry state beside it.
            let mut state = None;
            if delivered > 1
                && let Some(states) = &flow.state
            {
                match states
                    .get_last_raw_message_by_subject(&self.subject("s", &flow, &record.id))
                    .await
                {
                    Ok(found) => {
                        let found = Record::decode(&found.payload);
                        record.take_state(&found);
                        state = Some(found);
                    }
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                    Err(e) => {
                        // Given back at once rather than delivered without its attempts.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        tracing::debug!(error = %e, "cannot read an ordered message's retry state");
                        continue;
                    }
                }
            }
            if let Some(name) = record.body.take() {
                match self.read_body(&name).await {
                    // Gone, it is delivered empty: the delivery dead-letters it as unreadable.
                    Ok(payload) => record.payload = payload.unwrap_or_default(),
                    Err(e) => {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        tracing::debug!(error = %e, "cannot read a message's payload object");
                        continue;
                    }
                }
            }
            lock(&self.held).insert(
                seq,
                Held {
                    message,
                    since: std::time::Instant::now(),
                    state,
                    partition,
                },
            );
            claimed.push(record.queued(seq, &flow.name));
        }
        Ok(claimed)
    }

    pub(crate) async fn ack(&self, seq: i64) -> Result<bool, StoreError> {
        let held = lock(&self.held).get(&seq).cloned();
        let Some((flow, _)) = self.by_handle(seq) else {
            return Ok(false);
        };
        let id = held
            .as_ref()
            .and_then(|h| h.state.as_ref())
            .map(|state| state.id.clone())
            .unwrap_or_default();
        let body = held
            .as_ref()
            .and_then(|h| Record::body_of(&h.message.payload));
        let settled = self.settle(seq, &flow, held, &id).await?;
        if let Some(name) = body {
            self.forget_body(&name).await;
        }
        Ok(settled)
    }

    pub(crate) async fn reschedule(
        &self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        note: &str,
    ) -> Result<bool, StoreError> {
        let Some((flow, mut record, held)) = self.take(seq).await? else {
            return Ok(false);
        };
        record.attempts = attempts;
        record.due_ms = next_attempt_ms;
        if !note.is_empty() {
            let note = one_line(note);
            record.history.push(note.clone());
            cap_history(&mut record.history);
            record.last_error = Some(note);
        }
        if flow.state.is_some() && held.is_none() {
            // An ordered message keeps its place only while a node holds it: one this node
            // does not hold is left where it is, to be delivered again in its turn.
            tracing::warn!(flow = %flow.name, id = %record.id, "an ordered message this node does not hold was not rescheduled");
            return Ok(false);
        }
        if let (Some(_), Some(held)) = (&flow.state, &held) {
            // Ordered: the message keeps its place, and its partition lets nothing else out
            // until it is due again (a NAK with that delay); its retry state waits beside it.
            let state = Record {
                payload: Vec::new(),
                metadata: Vec::new(),
                ..record.clone()
            };
            self.publish(self.subject("s", &flow, &record.id), &state, None)
                .await?;
            let wait = Duration::from_millis((next_attempt_ms - wall_ms()).max(0) as u64);
            held.message
                .ack_with(AckKind::Nak(Some(wait)))
                .await
                .map_err(remote)?;
            lock(&self.held).remove(&seq);
            if let Some(p) = held.partition
                && let Some(until) = lock(&flow.resting).get_mut(p)
            {
                *until = next_attempt_ms;
            }
            return Ok(true);
        }
        // One retry copy per claim, however often the verdict is tried again.
        let copy = format!("{}.r{}.{attempts}", record.id, parts(seq).1);
        let at = self
            .publish(self.subject("r", &flow, &record.id), &record, Some(copy))
            .await?;
        // Indexed at once here (the other nodes read it from the stream).
        lock(&flow.due).insert((next_attempt_ms, at));
        self.settle(seq, &flow, held, &record.id).await
    }

    pub(crate) async fn dead_letter(
        &self,
        seq: i64,
        attempts: u32,
        failure: Failure,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let Some((flow, mut record, held)) = self.take(seq).await? else {
            return Ok(false);
        };
        record.attempts = attempts;
        record.failed = Some((now_ms, excerpt_cut(failure)));
        self.publish(self.subject("d", &flow, &record.id), &record, None)
            .await?;
        self.settle(seq, &flow, held, &record.id).await
    }

    pub(crate) async fn bury(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let flow = self.flow(&letter.flow).await?;
        let record = Record {
            id: letter.id,
            metadata: letter.metadata,
            payload: letter.payload,
            enqueued_at_ms: letter.enqueued_at_ms,
            attempts: letter.attempts,
            history: letter.history.iter().map(|l| one_line(l)).collect(),
            failed: Some((letter.failed_at_ms, excerpt_cut(letter.failure))),
            ..Default::default()
        };
        self.publish(self.subject("d", &flow, &record.id), &record, None)
            .await
            .map(|_| ())
    }

    pub(crate) async fn replay(&self, filter: DlqFilter, now_ms: i64) -> Result<u64, StoreError> {
        self.replay_letters(&filter, now_ms, None).await
    }

    pub(crate) async fn replay_edited(
        &self,
        id: &str,
        payload: &[u8],
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let filter = DlqFilter {
            id: Some(id.into()),
            first: Some(1),
            ..Default::default()
        };
        let edit = Some((payload, one_line(note)));
        Ok(self.replay_letters(&filter, now_ms, edit).await? == 1)
    }

    pub(crate) async fn purge(&self, filter: DlqFilter) -> Result<u64, StoreError> {
        let mut purged = 0;
        for found in self.matching(&filter).await? {
            let deleted = delete(&found.flow.dlq, found.seq).await?;
            if deleted && let Some(name) = &found.body {
                self.forget_body(name).await;
            }
            purged += u64::from(deleted);
        }
        Ok(purged)
    }

    pub(crate) async fn depth(&self, flow: &str) -> Result<Depth, StoreError> {
        let flow = self.flow(flow).await?;
        let mut depth = Depth::default();
        for stream in [&flow.queue, &flow.retry] {
            let mut stream = stream.clone();
            let state = stream.info().await.map_err(remote)?.state.clone();
            depth.messages += state.messages;
            depth.bytes += state.bytes;
            if state.messages > 0
                && let Ok(first) = stream.get_raw_message(state.first_sequence).await
            {
                let at = Record::decode(&first.payload).enqueued_at_ms;
                depth.oldest_enqueued_at_ms =
                    Some(depth.oldest_enqueued_at_ms.map_or(at, |o| o.min(at)));
            }
        }
        Ok(depth)
    }

    pub(crate) async fn find_queued(&self, id: &str) -> Result<Option<Waiting>, StoreError> {
        for name in self.flow_names().await? {
            let flow = self.flow(&name).await?;
            let mut places: Vec<(&stream::Stream, String)> = (0..flow.partitions.len())
                .map(|p| {
                    let subject =
                        format!("{}.q.{}.p{p}.{}", self.subjects, flow.token, key_token(id));
                    (&flow.queue, subject)
                })
                .collect();
            if flow.partitions.is_empty() {
                places.push((&flow.queue, self.subject("q", &flow, id)));
            }
            places.push((&flow.retry, self.subject("r", &flow, id)));
            for (stream, subject) in places {
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(found) => {
                        let record = Record::decode(&found.payload);
                        return Ok(Some(Waiting {
                            flow: flow.name.clone(),
                            id: record.id,
                            enqueued_at_ms: record.enqueued_at_ms,
                            attempts: record.attempts,
                            next_attempt_at_ms: record.due_ms,
                            // The server knows when a delivery lapses, not the nodes.
                            leased_until_ms: None,
                            last_error: record.last_error,
                        }));
                    }
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(remote(e)),
                }
            }
        }
        Ok(None)
    }

    pub(crate) async fn count_dead_letters(&self, filter: &DlqFilter) -> Result<u64, StoreError> {
        // Every field named, so that a new one cannot slip past this shortcut.
        if let DlqFilter {
            flow: Some(name),
            id: None,
            since_ms: None,
            reason: None,
            status: None,
            after: None,
            until_ms: None,
            first: None,
        } = filter
        {
            // The upkeep's count, every few seconds: the stream's size, not a pass over it.
            let mut dlq = self.flow(name).await?.dlq.clone();
            return Ok(dlq.info().await.map_err(remote)?.state.messages);
        }
        Ok(self.matching(filter).await?.len() as u64)
    }

    pub(crate) async fn dead_letters(
        &self,
        filter: &DlqFilter,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut found = self.matching(filter).await?;
        found.truncate(limit as usize);
        let mut letters = Vec::with_capacity(found.len());
        for Found { letter, body, .. } in found {
            let mut letter = letter;
            if let Some(name) = body {
                letter.payload = self.read_body(&name).await?.unwrap_or_default();
            }
            letters.push(letter);
        }
        Ok(letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let record = Record {
            body: Some("01J.1.0".into()),
            id: "01J".into(),
            order_key: Some("customer 7".into()),
            metadata: b"{\"a\":1}".to_vec(),
            payload: b"j{\"x\":\n1}".to_vec(),
            enqueued_at_ms: 12,
            attempts: 3,
            due_ms: 99,
            last_error: Some("503".into()),
            history: vec!["one".into(), "two".into()],
            failed: Some((
                100,
                Failure {
                    reason: "no".into(),
                    last_status: Some(400),
                    response_excerpt: Some(String::new()),
                },
            )),
        };
        assert_eq!(Record::decode(&record.encode()), record);
        assert_eq!(
            Record::body_of(&record.encode()).as_deref(),
            Some("01J.1.0")
        );
        let plain = Record::default();
        assert_eq!(Record::decode(&plain.encode()), plain);
        assert_eq!(Record::body_of(&plain.encode()), None);
        let foreign = Record::decode(b"not ours");
        assert_eq!(
            (foreign.id.as_str(), foreign.payload.as_slice()),
            ("unreadable", &b"not ours"[..])
        );
    }

    #[test]
    fn a_key_has_one_partition_on_every_node_and_keys_spread() {
        assert_eq!(partition("customer-1", 16), partition("customer-1", 16));
        let used: std::collections::HashSet<u32> =
            (0..200).map(|i| partition(&format!("c{i}"), 16)).collect();
        assert_eq!(used.len(), 16, "200 keys reach every one of 16 partitions");
        assert_eq!(partition("anything", 1), 0);
    }

    #[test]
    fn a_long_history_keeps_its_start_and_its_latest_lines() {
        let mut history: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        cap_history(&mut history);
        assert_eq!(history.len(), HISTORY_KEPT);
        assert_eq!((history[9].as_str(), history[10].as_str()), ("9", "910"));
        assert_eq!(history.last().map(String::as_str), Some("999"));
    }

    #[test]
    fn a_handle_names_the_flow_and_the_sequence() {
        for (index, seq) in [(0, 1), (3, 77), (1000, (1 << SEQ_BITS) - 1)] {
            assert_eq!(parts(handle(index, seq)), (index, seq));
        }
    }

    #[test]
    fn the_undone_line_is_what_sqlite_writes() {
        let failure = Failure {
            reason: "POST \"x\"\nanswered 400".into(),
            last_status: Some(400),
            response_excerpt: None,
        };
        assert_eq!(
            undone(50, 3, &failure),
            r#"{"at":50,"attempt":3,"outcome":"dead_lettered","status":400,"error":"POST \"x\" answered 400"}"#
        );
    }
}
