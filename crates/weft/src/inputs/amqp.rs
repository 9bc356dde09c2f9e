//! `amqp`: consumes a RabbitMQ queue with manual acknowledgements: a message is acked only once
//! it was delivered (or, in a durable flow, committed). At most `prefetch` messages are in
//! flight. A message whose delivery failed is offered to the flow again after a pause, up to
//! `redelivery.max_deliveries` times; then it is given up on: kept in the flow's dead-letter
//! queue and acked (`on_failure: store`, the default), or rejected without requeue
//! (`on_failure: dead_letter`), so a queue with a dead-letter exchange passes it there — and a
//! queue without one drops it. A message never acked (weft stopped or crashed) is delivered
//! again by the broker. `declare` sets up exchanges, queues and bindings first. The routing
//! key is in `%amqp.routing_key`.
//!
//! ```yaml
//! input:
//!   amqp:
//!     url: amqp://guest:guest@127.0.0.1:5672/%2f
//!     queue: orders
//!     prefetch: 32
//!     on_failure: dead_letter
//!     redelivery: { max_deliveries: 3, backoff: 2s }
//!     declare:
//!       queues: [{ name: orders, dead_letter_exchange: orders.dlx }]
//!       bindings: [{ exchange: orders.in, queue: orders, routing_key: "order.*" }]
//! ```

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Deserialize;

use super::{AtShutdown, Feed, GiveUp, Outcome, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::amqp::{Amqp, Declare};
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "AmqpInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `amqp://user:password@host:5672/vhost`.
    pub url: Secret,
    /// The queue to consume.
    pub queue: String,
    /// Messages in flight at most (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Where a message given up on goes: `store` (the flow's dead-letter queue, `weft dlq`)
    /// or `dead_letter` (rejected, to the queue's dead-letter exchange).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How often a failing message is offered again before it is given up on.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// Exchanges, queues and bindings to declare before consuming.
    #[serde(default)]
    pub declare: Declare,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Kept in the flow's dead-letter queue, then acked.
    #[default]
    Store,
    /// Rejected without requeue: to the queue's dead-letter exchange.
    DeadLetter,
}

fn default_prefetch() -> u16 {
    16
}

pub struct AmqpInput {
    amqp: Amqp,
    config: Config,
}

impl super::Spec for Config {
    type Built = AmqpInput;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<AmqpInput, Vec<BuildError>> {
        let amqp = Amqp::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?;
        self.declare
            .check()
            .map_err(|e| vec![BuildError::new("declare", e)])?;
        if self.prefetch == 0 {
            return Err(vec![BuildError::new("prefetch", "at least 1")]);
        }
        Ok(AmqpInput { amqp, config: self })
    }
}

impl AmqpInput {
    async fn consume(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        let e = |e: lapin::Error| e.to_string();
        let connection = self.amqp.connect().await.map_err(e)?;
        let channel = connection.create_channel().await.map_err(e)?;
        let tag = format!("weft-{}", feed.flow.name);
        let inflight = tokio_util::task::TaskTracker::new();
        let consumed = self.deliveries(feed, &channel, &tag, &inflight).await;
        if feed.shutdown.is_cancelled() {
            // No more deliveries; those under way still need the channel for their acks.
            let _ = channel
                .basic_cancel(tag.as_str().into(), Default::default())
                .await;
        }
        inflight.close();
        inflight.wait().await;
        let _ = connection.close(200, "weft stops reading".into()).await;
        consumed
    }

    async fn deliveries(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        channel: &lapin::Channel,
        tag: &str,
        inflight: &tokio_util::task::TaskTracker,
    ) -> Result<(), String> {
        let e = |e: lapin::Error| e.to_string();
        let c = &self.config;
        c.declare.apply(channel).await.map_err(e)?;
        channel
            .basic_qos(c.prefetch, BasicQosOptions::default())
            .await
            .map_err(e)?;
        let mut consumer = channel
            .basic_consume(
                c.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(e)?;
        let give_up = match c.on_failure {
            OnFailure::Store => GiveUp::Store,
            OnFailure::DeadLetter => GiveUp::Broker,
        };
        loop {
            let next = tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => return Ok(()),
                d = consumer.next() => d,
            };
            let Some(delivery) = next else {
                return Err("the broker ended the consumer".into());
            };
            let delivery = delivery.map_err(e)?;
            let mut message = Message::new(payload(&delivery.data));
            let mut meta = empty_object();
            insert(
                &mut meta,
                "routing_key",
                Value::from(delivery.routing_key.as_str()),
            );
            insert(
                &mut meta,
                "exchange",
                Value::from(delivery.exchange.as_str()),
            );
            insert(
                &mut meta,
                "redelivered",
                Value::Boolean(delivery.redelivered),
            );
            insert(&mut message.metadata, "amqp", meta);
            let feed = feed.clone();
            // Each delivery on its own: up to `prefetch` are in flight, acked as each ends.
            let redelivery = c.redelivery.clone();
            inflight.spawn(async move {
                let acked = match feed.deliver(message, &redelivery, give_up).await {
                    Outcome::Taken => delivery.ack(Default::default()).await,
                    Outcome::GivenUp if give_up == GiveUp::Store => {
                        delivery.ack(Default::default()).await
                    }
                    // To the queue's dead-letter exchange, if it has one.
                    Outcome::GivenUp => {
                        delivery
                            .nack(BasicNackOptions {
                                requeue: false,
                                ..Default::default()
                            })
                            .await
                    }
                    // Shutdown: back on the queue at once.
                    Outcome::Left | Outcome::Again(_) => {
                        delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await
                    }
                };
                match acked {
                    Ok(true) => {}
                    // The broker delivers it again once the channel is gone.
                    Ok(false) => {
                        tracing::warn!(flow = %feed.flow.name, component = "input.amqp", "the channel closed before the acknowledgement; the broker will deliver it again");
                    }
                    Err(error) => {
                        tracing::warn!(flow = %feed.flow.name, component = "input.amqp", %error, "could not acknowledge; the broker will deliver it again");
                    }
                }
            });
        }
    }
}

impl super::Source for AmqpInput {
    fn uses_store(&self) -> bool {
        self.config.on_failure == OnFailure::Store
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Not cancelled from outside: `consume` stops taking deliveries at shutdown and
        // acknowledges those under way.
        feed.keep_reading("input.amqp", self.amqp.shown(), AtShutdown::Finish, || {
            self.consume(&feed)
        })
        .await;
        Ok(())
    }
}
