//! `kafka`: writes each message as a record to a Kafka topic with an idempotent producer
//! (`acks=all`, `enable.idempotence`), so a record the brokers confirmed is on every in-sync
//! replica, and librdkafka's own resends never write it twice. A message counts as delivered
//! once its delivery report says so. (A message weft itself sends again after a `timeout`
//! may be written twice: give consumers a key to recognise it by.)
//!
//! ```yaml
//! output:
//!   kafka:
//!     brokers: [kafka-1:9092, kafka-2:9092]
//!     topic: "orders.{{ .region }}"
//!     key: "{{ .customer_id }}"     # one key, one partition
//!     headers: { source: weft }
//!     compression: lz4
//! ```
//!
//! The record's value is the message, written as `format` says (JSON by default, a string
//! message as its text; see `core::body`). A record the brokers did not confirm in `timeout`,
//! or a broker that cannot be reached, is tried again as `retry` says; a record the brokers
//! refuse for what it is (too large, an unknown or forbidden topic) fails for good.
//! Connections are plaintext (see `clients/kafka.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::body::{Encoding, Format};
use crate::core::retry::RetryConfig;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "KafkaOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers to start from, `host:port` each.
    pub brokers: Vec<String>,
    /// The topic; may contain `{{ expression }}` parts.
    pub topic: String,
    /// The record's key; may contain `{{ expression }}` parts. Records of one key go to one
    /// partition. Default: none (spread over the partitions).
    #[serde(default)]
    pub key: Option<String>,
    /// Record headers; values may contain `{{ expression }}` parts.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How the message is written: `json` (the default; a string message as its text),
    /// `text`, `xml`, `csv` or `form`.
    #[serde(default)]
    pub format: Option<Format>,
    /// `none` (the default), `gzip`, `snappy` or `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// Time for one record, from the send to the brokers' confirmation. Default 30s.
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// How record batches are compressed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
}

pub struct KafkaOutput {
    brokers: String,
    compression: Compression,
    topic: Template,
    key: Option<Template>,
    headers: Vec<(String, Template)>,
    encoding: Encoding,
    timeout: Duration,
    /// Made at the first message (it starts librdkafka's threads; `weft check` needs none),
    /// and made again after a fatal error (an idempotent producer that lost its sequence
    /// cannot go on).
    #[cfg(feature = "kafka")]
    producer: std::sync::Mutex<Option<std::sync::Arc<Producer>>>,
}

#[cfg(feature = "kafka")]
type Producer = rdkafka::producer::FutureProducer<crate::clients::kafka::Logged>;

impl super::Spec for Config {
    type Built = KafkaOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<KafkaOutput, Vec<BuildError>> {
        let mut errors = Vec::new();
        let brokers = crate::clients::kafka::brokers(&self.brokers)
            .map_err(|e| errors.push(e))
            .ok();
        let mut template = |field: &str, source: &str| {
            Template::parse(source, Escape::None)
                .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                .ok()
        };
        let topic = template("topic", &self.topic);
        let key = self.key.as_deref().map(|k| template("key", k));
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), template(&format!("headers.{name}"), value)))
            .collect();
        if self.topic.is_empty() {
            errors.push(BuildError::new("topic", "is empty"));
        }
        let encoding = Encoding::for_records(self.format)
            .map_err(|e| errors.push(BuildError::new("format", e)))
            .ok();
        let timeout = self
            .timeout
            .as_ref()
            .map_or(Duration::from_secs(30), |d| d.0);
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(86_400) {
            errors.push(BuildError::new("timeout", "from 1ms to 24h"));
        }
        match (brokers, topic, encoding) {
            (Some(brokers), Some(topic), Some(encoding)) if errors.is_empty() => Ok(KafkaOutput {
                brokers,
                compression: self.compression,
                topic,
                key: key.flatten(),
                headers: headers
                    .into_iter()
                    .filter_map(|(name, t)| Some((name, t?)))
                    .collect(),
                encoding,
                timeout,
                #[cfg(feature = "kafka")]
                producer: std::sync::Mutex::new(None),
            }),
            _ => Err(errors),
        }
    }
}

impl crate::core::Output for KafkaOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        let render = |what: &str, template: &Template| {
            template
                .render(&message.value, &message.metadata)
                .map_err(|e| format!("{what}: {e}"))
        };
        let topic = match render("topic", &self.topic) {
            Ok(topic) if topic.is_empty() => return fatal("topic: the message makes none".into()),
            Ok(topic) => topic,
            Err(e) => return fatal(e),
        };
        let key = match self.key.as_ref().map(|k| render("key", k)).transpose() {
            Ok(key) => key,
            Err(e) => return fatal(e),
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, template) in &self.headers {
            match render(&format!("headers.{name}"), template) {
                Ok(value) => headers.push((name.as_str(), value)),
                Err(e) => return fatal(e),
            }
        }
        let body = match self.encoding.encode(&message.value) {
            Ok((body, _)) => body,
            Err(e) => return fatal(format!("{topic}: {e}")),
        };
        self.produce(&topic, key.as_deref(), &headers, &body).await
    }

    fn reads_metadata(&self) -> bool {
        self.topic.reads_metadata()
            || self.key.as_ref().is_some_and(Template::reads_metadata)
            || self.headers.iter().any(|(_, t)| t.reads_metadata())
    }
}

#[cfg(feature = "kafka")]
impl KafkaOutput {
    fn producer(&self) -> Result<std::sync::Arc<Producer>, String> {
        use rdkafka::producer::Producer as _;
        let mut held = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(producer) = held.as_ref() {
            match producer.client().fatal_error() {
                None => return Ok(producer.clone()),
                Some((code, reason)) => {
                    tracing::error!(component = "output.kafka", %code, reason, "the producer failed for good; making a new one");
                }
            }
        }
        let made: Producer = {
            let mut config = crate::clients::kafka::config(&self.brokers);
            config
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .set("message.timeout.ms", self.timeout.as_millis().to_string())
                .set(
                    "compression.codec",
                    match self.compression {
                        Compression::None => "none",
                        Compression::Gzip => "gzip",
                        Compression::Snappy => "snappy",
                        Compression::Lz4 => "lz4",
                    },
                );
            config
                .create_with_context(crate::clients::kafka::Logged("output.kafka"))
                .map_err(|e| e.to_string())?
        };
        let made = std::sync::Arc::new(made);
        *held = Some(made.clone());
        Ok(made)
    }

    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Attempt {
        use rdkafka::error::KafkaError;
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::FutureRecord;
        use rdkafka::types::RDKafkaErrorCode as Code;

        let producer = match self.producer() {
            Ok(producer) => producer,
            Err(reason) => {
                return Attempt::Fatal {
                    reason,
                    response: None,
                };
            }
        };
        let mut record = FutureRecord::to(topic).payload(body);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                });
            }
            record = record.headers(owned);
        }
        match producer.send(record, self.timeout).await {
            Ok(_) => Attempt::Delivered,
            Err((error, _)) => {
                let reason = format!("{topic}: {error}");
                let lasting = matches!(
                    &error,
                    KafkaError::MessageProduction(
                        Code::MessageSizeTooLarge
                            | Code::InvalidRecord
                            | Code::InvalidTopic
                            | Code::TopicAuthorizationFailed
                            | Code::ClusterAuthorizationFailed
                            | Code::UnknownTopic
                            | Code::MessageBatchTooLarge
                    )
                );
                if lasting {
                    Attempt::Fatal {
                        reason,
                        response: None,
                    }
                } else {
                    Attempt::Retryable {
                        reason,
                        retry_after: None,
                        response: None,
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "kafka"))]
impl KafkaOutput {
    async fn produce(&self, _: &str, _: Option<&str>, _: &[(&str, String)], _: &[u8]) -> Attempt {
        let _ = (&self.brokers, self.compression, self.timeout);
        Attempt::Fatal {
            reason: "this weft was built without Kafka".into(),
            response: None,
        }
    }
}
