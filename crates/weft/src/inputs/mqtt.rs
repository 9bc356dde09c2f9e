//! `mqtt`: subscribes to MQTT topic filters with QoS 1 in a persistent session and acknowledges
//! each message (PUBACK) only once it was delivered (or, in a durable flow, committed). A
//! message whose delivery failed is offered to the flow again after a pause (doubling up to
//! 30 s), still unacknowledged, so a broker that loses the connection meanwhile sends it again.
//! With a stable `client_id` the broker keeps the session while weft is away and delivers what
//! came meanwhile. The topic is in `%mqtt.topic`.
//!
//! ```yaml
//! input:
//!   mqtt:
//!     url: mqtt://127.0.0.1:1883
//!     topics: ["sensors/+/temperature"]
//!     client_id: weft-sensors      # default: weft-<flow>
//! ```

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet};
use serde::Deserialize;

use super::Feed;
use crate::clients::mqtt::{Mqtt, qos};
use crate::clients::secret::Secret;
use crate::config::BuildError;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mqtt://[user:password@]host:1883`.
    pub url: Secret,
    /// Topic filters (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// The session's client id; keep it stable across restarts. Default `weft-<flow>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Subscription QoS: 1 (default) or 0 (no acknowledgements, no redelivery).
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

pub struct MqttInput {
    mqtt: Mqtt,
    config: Config,
}

const MAX_PAUSE: Duration = Duration::from_secs(30);

impl Config {
    pub fn build(self) -> Result<MqttInput, Vec<BuildError>> {
        let mqtt = Mqtt::open(&self.url).map_err(|e| vec![BuildError::new("url", e)])?;
        if self.topics.is_empty() {
            return Err(vec![BuildError::new("topics", "name at least one topic")]);
        }
        if self.qos > 1 {
            return Err(vec![BuildError::new("qos", "0 or 1")]);
        }
        Ok(MqttInput { mqtt, config: self })
    }
}

impl MqttInput {
    pub async fn run(&self, feed: Feed) {
        let c = &self.config;
        let client_id = c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("weft-{}", feed.flow.name));
        let mut options = self.mqtt.options(&client_id, false);
        options.set_manual_acks(true);
        let (client, mut events) = AsyncClient::new(options, 64);
        let level = qos(c.qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
        let inflight = tokio_util::task::TaskTracker::new();
        let component = "input.mqtt";
        // Which connection this is: a message taken on an earlier one is not acknowledged on
        // this one (its packet id may now name another message; the session resends it).
        let connection = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        loop {
            let event = tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => break,
                e = events.poll() => e,
            };
            match event {
                // (Re)subscribed on every new connection: harmless on a kept session.
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connection.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!(flow = %feed.flow.name, component, mqtt = self.mqtt.shown(), "connected");
                    for topic in &c.topics {
                        if let Err(error) = client.subscribe(topic.clone(), level).await {
                            tracing::error!(flow = %feed.flow.name, component, %error, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let feed = feed.clone();
                    let client = client.clone();
                    let connection = connection.clone();
                    let taken_on = connection.load(std::sync::atomic::Ordering::SeqCst);
                    inflight.spawn(async move {
                        let mut pause = Duration::from_millis(500);
                        loop {
                            let mut message = Message::new(payload(&publish.payload));
                            let mut meta = empty_object();
                            insert(&mut meta, "topic", Value::from(publish.topic.as_str()));
                            insert(&mut message.metadata, "mqtt", meta);
                            if feed.push_and_wait(vec![message]).await {
                                if connection.load(std::sync::atomic::Ordering::SeqCst) != taken_on {
                                    return;
                                }
                                if let Err(error) = client.ack(&publish).await {
                                    tracing::warn!(flow = %feed.flow.name, component, %error, "could not acknowledge; the broker will send it again");
                                }
                                return;
                            }
                            tokio::select! {
                                _ = feed.shutdown.cancelled() => return,
                                _ = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(MAX_PAUSE);
                        }
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(flow = %feed.flow.name, component, mqtt = self.mqtt.shown(), %error, "connection lost; connecting again");
                    tokio::select! {
                        _ = feed.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        // Let what is under way finish, the event loop carrying its acknowledgements out
        // meanwhile (the engine's shutdown_timeout bounds it), then disconnect.
        inflight.close();
        loop {
            tokio::select! {
                _ = inflight.wait() => break,
                e = events.poll() => if e.is_err() { break },
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
}
