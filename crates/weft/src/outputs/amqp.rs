//! `amqp`: publishes each message to a RabbitMQ exchange with publisher confirms: a message
//! counts as delivered only once the broker confirmed it, and a message no queue takes
//! (`mandatory`) fails rather than vanishing. Messages are persistent (`delivery_mode` 2) and
//! carry their content type. `declare` sets up exchanges, queues and bindings first.
//!
//! ```yaml
//! output:
//!   amqp:
//!     url: amqp://guest:guest@127.0.0.1:5672/%2f
//!     exchange: orders                # "" is the default exchange (routing key = queue)
//!     routing_key: order.created
//!     declare:
//!       exchanges: [{ name: orders, kind: topic }]
//! ```

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::amqp::{Amqp, Declare};
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "AmqpOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `amqp://user:password@host:5672/vhost`.
    pub url: Secret,
    /// The exchange; `""` is the default one, which routes by queue name.
    #[serde(default)]
    pub exchange: String,
    /// The routing key each message is published with (the queue's name for the default
    /// exchange).
    #[serde(default)]
    pub routing_key: String,
    /// Exchanges, queues and bindings to declare before publishing.
    #[serde(default)]
    pub declare: Declare,
    /// Fail a message no queue is bound to take (else the broker drops it).
    #[serde(default = "yes")]
    pub mandatory: bool,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn yes() -> bool {
    true
}

pub struct AmqpOutput {
    amqp: Amqp,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    declare: Declare,
    /// The connection and its confirming channel, opened on first use and again after a
    /// failure.
    open: Mutex<Option<(Connection, Channel)>>,
}

impl super::Spec for Config {
    type Built = AmqpOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<AmqpOutput, Vec<BuildError>> {
        let amqp = Amqp::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?;
        self.declare
            .check()
            .map_err(|e| vec![BuildError::new("declare", e)])?;
        Ok(AmqpOutput {
            amqp,
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            mandatory: self.mandatory,
            declare: self.declare.clone(),
            open: Mutex::new(None),
        })
    }
}

impl AmqpOutput {
    fn retry(&self, e: impl std::fmt::Display) -> Attempt {
        Attempt::Retryable {
            reason: format!("amqp {}: {e}", self.amqp.shown()),
            retry_after: None,
            response: None,
        }
    }

    async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = &*open
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = self.amqp.connect().await?;
        let channel = connection.create_channel().await?;
        self.declare.apply(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }
}

impl crate::core::Output for AmqpOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => return self.retry(e),
        };
        let content_type = if message.is_json() {
            "application/json"
        } else {
            "text/plain"
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(content_type.into())
            .with_message_id(message.id.to_string().as_str().into());
        let published = channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: self.mandatory,
                    ..Default::default()
                },
                &message.body(),
                properties,
            )
            .await;
        let confirm = match published {
            Ok(c) => c,
            Err(e) => {
                *self.open.lock().await = None;
                return self.retry(e);
            }
        };
        match confirm.await {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Attempt::Delivered,
            Ok(Confirmation::Ack(Some(returned))) => Attempt::Fatal {
                reason: format!(
                    "amqp {}: no queue takes routing key `{}` on exchange `{}` ({})",
                    self.amqp.shown(),
                    self.routing_key,
                    self.exchange,
                    returned.reply_text
                ),
                response: None,
            },
            Ok(Confirmation::Nack(_)) => self.retry("the broker refused the message (nack)"),
            Err(e) => {
                *self.open.lock().await = None;
                self.retry(e)
            }
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
