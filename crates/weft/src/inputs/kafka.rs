//! `kafka`: reads topics as a member of a consumer group and commits a partition's offset only
//! past messages that were delivered (or, in a durable flow, stored), so a crash or a
//! rebalance offers again what was under way and loses nothing.
//!
//! Messages are delivered side by side, up to `max_in_flight` (and the flow's
//! `concurrency`), so their order is not kept, not even within a partition; each partition's
//! offset is stored at its oldest message still under way, and the stored offsets are
//! committed every `commit_interval` and at a clean stop. When `max_in_flight` messages have
//! been under way for 10s the partitions are paused, and the consumer goes on answering the
//! group, so a slow output does not cost it its partitions. A message whose delivery fails is
//! offered again here after `redelivery`'s pause (the partition's offset waits for it), and
//! the delivery that reaches `redelivery.max_deliveries` keeps it in the flow's dead-letter
//! queue (`weft dlq`), after which the offset moves on.
//!
//! ```yaml
//! input:
//!   kafka:
//!     brokers: [kafka-1:9092, kafka-2:9092]
//!     topics: [orders]
//!     group: weft-orders
//!     start: earliest          # where a group without a committed offset starts
//!     redelivery: { max_deliveries: 5 }
//! ```
//!
//! The message is the record's value (JSON when it parses, else bytes); `%kafka.topic`,
//! `%kafka.partition`, `%kafka.offset`, `%kafka.key` (text, if any), `%kafka.timestamp`
//! (milliseconds, if any) and `%kafka.headers` (an object of text values) describe it.
//! Connections are plaintext (see `clients/kafka.rs`). Every node of a cluster joins the
//! group, and Kafka shares the partitions out between them; when they move (a node starts or
//! stops), what was under way is read again from the last commit, so a rebalance can deliver
//! up to `max_in_flight` messages twice.

#[cfg(feature = "kafka")]
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::{Feed, Redelivery};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "KafkaInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers to start from, `host:port` each.
    pub brokers: Vec<String>,
    /// The topics to read.
    pub topics: Vec<String>,
    /// The consumer group this flow reads as; offsets are committed to it.
    pub group: String,
    /// Where a group without a committed offset starts: `earliest` (the default) or `latest`.
    #[serde(default)]
    pub start: Start,
    /// How often the offsets of delivered messages are committed. Default 1s.
    #[serde(default)]
    pub commit_interval: Option<Dur>,
    /// How long the group waits for a member that stopped answering (killed, cut off) before
    /// its partitions go to the others. Default 45s, as in Kafka.
    #[serde(default)]
    pub session_timeout: Option<Dur>,
    /// The most messages under way at once. Default 1024.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// How often a failing message is offered again before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

/// Where a group without a committed offset starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The oldest message the topic still holds.
    #[default]
    Earliest,
    /// Only messages written from now on.
    Latest,
}

pub struct KafkaInput {
    brokers: String,
    topics: Vec<String>,
    group: String,
    start: Start,
    commit_interval: Duration,
    session_timeout: Duration,
    max_in_flight: usize,
    redelivery: Redelivery,
}

const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// How long a full `max_in_flight` is waited out before the partitions are paused.
#[cfg(feature = "kafka")]
const STALL: Duration = Duration::from_secs(10);

/// librdkafka's `max.poll.interval.ms`, the most `session_timeout` may be.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

impl super::Spec for Config {
    type Built = KafkaInput;

    fn build(
        self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<KafkaInput, Vec<BuildError>> {
        let mut errors = Vec::new();
        let brokers = crate::clients::kafka::brokers(&self.brokers)
            .map_err(|e| errors.push(e))
            .ok();
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            errors.push(BuildError::new(
                "topics",
                "name at least one topic, none empty",
            ));
        }
        if self.group.is_empty() {
            errors.push(BuildError::new("group", "is empty"));
        }
        let commit_interval = self
            .commit_interval
            .as_ref()
            .map_or(Duration::from_secs(1), |d| d.0);
        if commit_interval.is_zero() || commit_interval > Duration::from_secs(3600) {
            errors.push(BuildError::new("commit_interval", "from 1ms to 1h"));
        }
        let session_timeout = self
            .session_timeout
            .as_ref()
            .map_or(Duration::from_secs(45), |d| d.0);
        // Kafka's brokers take 6s to 5m by default; librdkafka wants it under its poll interval.
        if !(Duration::from_secs(1)..=MAX_POLL_INTERVAL).contains(&session_timeout) {
            errors.push(BuildError::new("session_timeout", "from 1s to 5m"));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            errors.push(BuildError::new("max_in_flight", "at least 1"));
        }
        match brokers {
            Some(brokers) if errors.is_empty() => Ok(KafkaInput {
                brokers,
                topics: self.topics,
                group: self.group,
                start: self.start,
                commit_interval,
                session_timeout,
                max_in_flight,
                redelivery: self.redelivery,
            }),
            _ => Err(errors),
        }
    }
}

/// The offsets under way in each partition, and what may be committed: a partition's offset
/// moves only past messages that are all done.
#[cfg(feature = "kafka")]
#[derive(Default)]
struct Offsets {
    partitions: HashMap<(String, i32), Partition>,
}

#[cfg(feature = "kafka")]
#[derive(Default)]
struct Partition {
    under_way: BTreeSet<i64>,
    /// The highest offset taken.
    highest: Option<i64>,
    /// The last offset stored for commit (every one up to it is done).
    stored: Option<i64>,
}

#[cfg(feature = "kafka")]
impl Offsets {
    fn taken(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_default();
        // Read again from further back (the partition came back after a rebalance, or the
        // log was reset): what is known of it no longer holds. Messages of before that are
        // still under way end without moving anything (they are no longer under way here).
        if p.highest.is_some_and(|h| offset <= h) && !p.under_way.contains(&offset) {
            *p = Partition::default();
        }
        p.under_way.insert(offset);
        p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
        // What came before the first message read here was committed already.
        p.stored.get_or_insert(offset - 1);
    }

    /// The message at `offset` is done; the last offset up to which every message is done,
    /// if that moved.
    fn done(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        p.under_way.remove(&offset);
        let through = match p.under_way.first() {
            Some(oldest) => oldest - 1,
            None => p.highest?,
        };
        if p.stored.is_some_and(|s| s >= through) {
            return None;
        }
        p.stored = Some(through);
        Some(through)
    }
}

#[cfg(feature = "kafka")]
mod reading {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use rdkafka::Message as _;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::{BorrowedMessage, Headers};

    use super::*;
    use crate::clients::kafka::{Logged, config};
    use crate::core::Message;
    use crate::core::body::payload;
    use crate::core::mapping::{Value, empty_object, insert};
    use crate::inputs::{GiveUp, Outcome};

    type Kafka = StreamConsumer<Logged>;

    impl KafkaInput {
        fn consumer(&self) -> Result<Kafka, String> {
            let mut c = config(&self.brokers);
            c.set("group.id", &self.group)
                .set("enable.auto.commit", "true")
                // Offsets are stored by weft once a message is done, never on receipt.
                .set("enable.auto.offset.store", "false")
                .set(
                    "session.timeout.ms",
                    self.session_timeout.as_millis().to_string(),
                )
                .set(
                    "auto.commit.interval.ms",
                    self.commit_interval.as_millis().to_string(),
                )
                .set(
                    "auto.offset.reset",
                    match self.start {
                        Start::Earliest => "earliest",
                        Start::Latest => "latest",
                    },
                );
            let consumer: Kafka = c
                .create_with_context(Logged("input.kafka"))
                .map_err(|e| e.to_string())?;
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics).map_err(|e| e.to_string())?;
            Ok(consumer)
        }

        /// One consumer's life: reads until shutdown, then lets what is under way end and
        /// commits what it delivered.
        pub(super) async fn consume(
            &self,
            feed: &Feed<impl Processor, impl Output>,
        ) -> Result<(), String> {
            let consumer = Arc::new(self.consumer()?);
            let offsets = Arc::new(Mutex::new(Offsets::default()));
            let room = Arc::new(tokio::sync::Semaphore::new(self.max_in_flight));
            let under_way = tokio_util::task::TaskTracker::new();
            // Records read while the partitions were being paused, kept for their turn.
            let mut held: VecDeque<Record> = VecDeque::new();
            loop {
                let Some(permit) = room_for_one(feed, &consumer, &room, &mut held).await? else {
                    break;
                };
                let record = match held.pop_front() {
                    Some(next) => next,
                    None => {
                        let received = tokio::select! {
                            biased;
                            _ = feed.shutdown.cancelled() => break,
                            r = consumer.recv() => r,
                        };
                        match received {
                            Ok(record) => Record::of(&record),
                            Err(error) => {
                                // librdkafka reconnects by itself; say it, and read on.
                                tracing::warn!(flow = %feed.flow.name, component = "input.kafka", %error, "reading failed");
                                tokio::select! {
                                    _ = feed.shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                }
                                continue;
                            }
                        }
                    }
                };
                let (partition, offset) = (record.partition, record.offset);
                lock(&offsets).taken(&record.topic, partition, offset);
                let (feed, consumer, offsets) = (feed.clone(), consumer.clone(), offsets.clone());
                let redelivery = self.redelivery.clone();
                under_way.spawn(async move {
                    // Made from the record for each delivery: none is copied.
                    let outcome = feed
                        .deliver_made(|| record.message(), &redelivery, GiveUp::Store)
                        .await;
                    drop(permit);
                    if matches!(outcome, Outcome::Taken | Outcome::GivenUp) {
                        let topic = &record.topic;
                        let mut offsets = lock(&offsets);
                        if let Some(through) = offsets.done(topic, partition, offset)
                            && let Err(error) = consumer.store_offset(topic, partition, through)
                        {
                            // The partition went to another member: it reads it again from
                            // the last commit.
                            tracing::debug!(flow = %feed.flow.name, component = "input.kafka", %error, "offset not stored");
                        }
                    }
                });
            }
            under_way.close();
            under_way.wait().await;
            // Committing and leaving the group wait on the brokers: off the runtime's threads.
            let committed = tokio::task::spawn_blocking(move || {
                let committed = consumer.commit_consumer_state(CommitMode::Sync);
                drop(consumer);
                committed
            })
            .await
            .map_err(|e| e.to_string())?;
            // Nothing stored since the last commit is not an error.
            if let Err(error) = committed
                && error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            {
                tracing::warn!(flow = %feed.flow.name, component = "input.kafka", %error, "the last offsets were not committed; their messages will be read again");
            }
            Ok(())
        }
    }

    /// A place under way, once one is free; `None` at shutdown. A place usually comes back
    /// soon, and waiting for it keeps what librdkafka fetched ahead (pausing would drop it).
    /// After a long stall the partitions are paused and the consumer goes on polling, keeping
    /// what it reads in `held`, so the group does not take them away while the outputs are
    /// slow.
    async fn room_for_one(
        feed: &Feed<impl Processor, impl Output>,
        consumer: &Kafka,
        room: &Arc<tokio::sync::Semaphore>,
        held: &mut VecDeque<Record>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, String> {
        if let Ok(permit) = room.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let soon = tokio::select! {
            biased;
            _ = feed.shutdown.cancelled() => return Ok(None),
            p = tokio::time::timeout(STALL, room.clone().acquire_owned()) => p,
        };
        if let Ok(permit) = soon {
            return permit.map(Some).map_err(|e| e.to_string());
        }
        paused(consumer, true);
        let permit = loop {
            tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => break None,
                p = room.clone().acquire_owned() => break p.ok(),
                r = consumer.recv() => match r {
                    Ok(record) => {
                        held.push_back(Record::of(&record));
                        // A partition newly assigned comes unpaused.
                        paused(consumer, true);
                    }
                    Err(error) => {
                        tracing::warn!(flow = %feed.flow.name, component = "input.kafka", %error, "reading failed");
                    }
                },
            }
        };
        paused(consumer, false);
        Ok(permit)
    }

    /// A record read, its bytes owned.
    struct Record {
        topic: String,
        partition: i32,
        offset: i64,
        payload: Vec<u8>,
        key: Option<Vec<u8>>,
        timestamp: Option<i64>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    impl Record {
        fn of(record: &BorrowedMessage<'_>) -> Record {
            Record {
                topic: record.topic().to_string(),
                partition: record.partition(),
                offset: record.offset(),
                payload: record.payload().unwrap_or_default().to_vec(),
                key: record.key().map(<[u8]>::to_vec),
                timestamp: record.timestamp().to_millis(),
                headers: record.headers().map_or_else(Vec::new, |all| {
                    all.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                }),
            }
        }

        /// The record as a message, described by `%kafka`.
        fn message(&self) -> Message {
            let mut message = Message::new(payload(&self.payload));
            let mut meta = empty_object();
            insert(&mut meta, "topic", Value::from(self.topic.as_str()));
            insert(
                &mut meta,
                "partition",
                Value::from(i64::from(self.partition)),
            );
            insert(&mut meta, "offset", Value::from(self.offset));
            if let Some(key) = &self.key {
                insert(
                    &mut meta,
                    "key",
                    Value::from(String::from_utf8_lossy(key).as_ref()),
                );
            }
            if let Some(ms) = self.timestamp {
                insert(&mut meta, "timestamp", Value::from(ms));
            }
            let mut headers = empty_object();
            for (key, value) in &self.headers {
                let value = value.as_ref().map_or(Value::Null, |v| {
                    Value::from(String::from_utf8_lossy(v).as_ref())
                });
                insert(&mut headers, key, value);
            }
            insert(&mut meta, "headers", headers);
            insert(&mut message.metadata, "kafka", meta);
            message
        }
    }

    /// Pauses or resumes every partition assigned (nothing to do while there are none).
    fn paused(consumer: &Kafka, pause: bool) {
        if let Ok(assignment) = consumer.assignment() {
            let done = if pause {
                consumer.pause(&assignment)
            } else {
                consumer.resume(&assignment)
            };
            if let Err(error) = done {
                tracing::debug!(component = "input.kafka", %error, "pausing or resuming failed");
            }
        }
    }

    fn lock(offsets: &Mutex<Offsets>) -> std::sync::MutexGuard<'_, Offsets> {
        offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl super::Source for KafkaInput {
    fn uses_store(&self) -> bool {
        // Given-up messages go to the flow's dead-letter queue.
        true
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        #[cfg(feature = "kafka")]
        feed.keep_reading(
            "input.kafka",
            &self.brokers,
            super::AtShutdown::Finish,
            || self.consume(&feed),
        )
        .await;
        #[cfg(not(feature = "kafka"))]
        let _ = (
            feed,
            &self.brokers,
            self.max_in_flight,
            &self.redelivery,
            &self.topics,
            &self.group,
            self.start,
            self.commit_interval,
            self.session_timeout,
        );
        Ok(())
    }
}

#[cfg(all(test, feature = "kafka"))]
mod tests {
    use super::Offsets;

    #[test]
    fn a_partition_is_committed_only_past_messages_all_done() {
        let mut offsets = Offsets::default();
        for offset in 10..=13 {
            offsets.taken("t", 0, offset);
        }
        offsets.taken("t", 1, 5);
        assert_eq!(offsets.done("t", 0, 12), None, "10 and 11 are under way");
        assert_eq!(offsets.done("t", 0, 11), None);
        assert_eq!(offsets.done("t", 0, 10), Some(12));
        assert_eq!(offsets.done("t", 1, 5), Some(5), "partitions are apart");
        assert_eq!(offsets.done("t", 0, 13), Some(13));
        offsets.taken("t", 0, 14);
        assert_eq!(offsets.done("t", 0, 14), Some(14));
    }
}
