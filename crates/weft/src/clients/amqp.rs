//! RabbitMQ (AMQP 0-9-1), through `lapin`, for the `amqp` input and output: a connection per
//! component, opened on first use and opened again after it fails, and the exchanges, queues
//! and bindings a component declares before it starts (declaring is idempotent in AMQP, so
//! every start may do it).

use std::collections::BTreeMap;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;

use crate::config::Secret;

/// What to declare before use.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Declare {
    /// Exchanges to declare (an existing one must match what is declared here).
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    /// Queues to declare.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// Bindings of queues to exchanges, declared after both.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// The exchange's name.
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Kept across broker restarts.
    #[serde(default = "yes")]
    pub durable: bool,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The queue's name.
    pub name: String,
    /// Kept across broker restarts (its persistent messages too).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Where refused messages go (`x-dead-letter-exchange`).
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    /// Further queue arguments (`x-message-ttl`, `x-queue-type`, …), as text or numbers.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// The exchange that routes.
    pub exchange: String,
    /// The queue that receives.
    pub queue: String,
    /// The key (or pattern, for a `topic` exchange) the binding matches.
    #[serde(default)]
    pub routing_key: String,
}

fn default_kind() -> String {
    "direct".into()
}
fn yes() -> bool {
    true
}

impl Declare {
    pub fn check(&self) -> Result<(), String> {
        for e in &self.exchanges {
            if !matches!(e.kind.as_str(), "direct" | "fanout" | "topic" | "headers") {
                return Err(format!(
                    "exchange `{}`: kind `{}` is not direct, fanout, topic or headers",
                    e.name, e.kind
                ));
            }
        }
        Ok(())
    }

    pub async fn apply(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for e in &self.exchanges {
            let kind = match e.kind.as_str() {
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                _ => ExchangeKind::Direct,
            };
            channel
                .exchange_declare(
                    e.name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: e.durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        for q in &self.queues {
            let mut arguments = FieldTable::default();
            if let Some(dlx) = &q.dead_letter_exchange {
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(dlx.as_str().into()),
                );
            }
            for (name, value) in &q.arguments {
                let value = match value {
                    serde_json::Value::Number(n) if n.is_i64() => {
                        AMQPValue::LongLongInt(n.as_i64().unwrap_or(0))
                    }
                    serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
                    serde_json::Value::String(s) => AMQPValue::LongString(s.as_str().into()),
                    other => AMQPValue::LongString(other.to_string().as_str().into()),
                };
                arguments.insert(ShortString::from(name.as_str()), value);
            }
            channel
                .queue_declare(
                    q.name.as_str().into(),
                    QueueDeclareOptions {
                        durable: q.durable,
                        ..Default::default()
                    },
                    arguments,
                )
                .await?;
        }
        for b in &self.bindings {
            channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// A broker, by URL (`amqp://user:password@host:5672/vhost`, `amqps://` for TLS).
pub struct Amqp {
    url: Secret,
    /// The URL without credentials, for messages.
    shown: String,
}

impl Amqp {
    pub fn open(url: &Secret) -> Result<Amqp, String> {
        let parsed: lapin::uri::AMQPUri = url
            .expose()
            .parse()
            .map_err(|_| "not a valid amqp:// URL".to_string())?;
        let shown = format!(
            "{}://{}:{}/{}",
            match parsed.scheme {
                lapin::uri::AMQPScheme::AMQPS => "amqps",
                lapin::uri::AMQPScheme::AMQP => "amqp",
            },
            parsed.authority.host,
            parsed.authority.port,
            parsed.vhost
        );
        Ok(Amqp {
            url: url.clone(),
            shown,
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub async fn connect(&self) -> Result<Connection, lapin::Error> {
        Connection::connect(self.url.expose(), ConnectionProperties::default()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_out_of_what_is_shown() {
        let amqp = Amqp::open(&Secret::new("amqp://weft:s3cret@rabbit:5672/%2f")).unwrap();
        assert!(!amqp.shown().contains("s3cret"), "{}", amqp.shown());
        assert!(
            amqp.shown().starts_with("amqp://rabbit:5672/"),
            "{}",
            amqp.shown()
        );
        let redis =
            crate::clients::redis::Redis::open(&Secret::new("redis://:s3cret@cache:6380/2"), None)
                .ok()
                .unwrap();
        assert!(!redis.shown().contains("s3cret"), "{}", redis.shown());
        let nats = crate::clients::nats::Nats::open(&Secret::new("nats://weft:s3cret@bus:4222"))
            .ok()
            .unwrap();
        assert_eq!(nats.shown(), "nats://bus:4222");
        assert!(Amqp::open(&Secret::new("http://rabbit")).is_err());
    }
}
