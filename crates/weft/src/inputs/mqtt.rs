//! `mqtt`: subscribes to MQTT topic filters with QoS 1 in a persistent session and acknowledges
//! each message (PUBACK) only once it was delivered (or, in a durable flow, committed). A
//! message whose delivery failed is offered to the flow again after a pause, still
//! unacknowledged (a broker that loses the connection meanwhile sends it again), up to
//! `redelivery.max_deliveries` times; then it is kept in the flow's dead-letter queue and
//! acknowledged, so failing messages never fill the broker's in-flight window.
//! With a stable `client_id` the broker keeps the session while weft is away and delivers what
//! came meanwhile (under MQTT 5 the session is asked never to expire). The topic is in
//! `%mqtt.topic`.
//!
//! ```yaml
//! input:
//!   mqtt:
//!     url: mqtt://127.0.0.1:1883
//!     topics: ["sensors/+/temperature"]
//!     client_id: weft-sensors      # default: weft-<flow>
//!     version: 5                   # default 3.1.1
//!     redelivery: { max_deliveries: 5, backoff: 1s }
//! ```
//!
//! Over TLS, `mqtts://` (port 8883 by default), with a private CA or a client certificate:
//!
//! ```yaml
//! input:
//!   mqtt:
//!     url: mqtts://broker.internal:8883
//!     topics: ["sensors/#"]
//!     tls: { ca_file: /etc/weft/broker-ca.pem, cert_file: /etc/weft/client.pem, key_file: /etc/weft/client.key }
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{Feed, GiveUp, Outcome, Redelivery};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::mqtt::{Happened, Mqtt, Version, check_qos, default_version};
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::Message;
use crate::core::body::payload;
use crate::core::mapping::{Value, empty_object, insert};
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "MqttInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mqtt://[user:password@]host:1883`, or `mqtts://host:8883` for TLS.
    pub url: Secret,
    /// For an `mqtts://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// Topic filters (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// The session's client id; keep it stable across restarts. Default `weft-<flow>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Subscription QoS: 1 (default) or 0 (no acknowledgements, no redelivery).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The protocol: `3.1.1` (default) or `5`.
    #[serde(default = "default_version")]
    #[schemars(schema_with = "crate::clients::mqtt::version_schema")]
    pub version: String,
    /// How often a failing message is offered again before it is dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
}

fn default_qos() -> u8 {
    1
}

pub struct MqttInput {
    mqtt: Mqtt,
    version: Version,
    config: Config,
}

impl super::Spec for Config {
    type Built = MqttInput;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<MqttInput, Vec<BuildError>> {
        let mqtt = Mqtt::open(&self.url, self.tls.as_ref())?;
        if self.topics.is_empty() {
            return Err(vec![BuildError::new("topics", "name at least one topic")]);
        }
        check_qos(self.qos).map_err(|e| vec![BuildError::new("qos", e)])?;
        let version =
            Version::parse(&self.version).map_err(|e| vec![BuildError::new("version", e)])?;
        Ok(MqttInput {
            mqtt,
            version,
            config: self,
        })
    }
}

impl super::Source for MqttInput {
    fn uses_store(&self) -> bool {
        true // dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        let c = &self.config;
        let client_id = c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("weft-{}", feed.flow.name));
        let (client, mut events) = self
            .mqtt
            .connect(self.version, &client_id, false, true, 64)
            .map_err(std::io::Error::other)?;
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
                Ok(Happened::Connected) => {
                    connection.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!(flow = %feed.flow.name, component, mqtt = self.mqtt.shown(), "connected");
                    for topic in &c.topics {
                        if let Err(error) = client.subscribe(topic, c.qos).await {
                            tracing::error!(flow = %feed.flow.name, component, %error, "cannot subscribe");
                        }
                    }
                }
                Ok(Happened::Received(publish)) => {
                    let feed = feed.clone();
                    let client = client.clone();
                    let connection = connection.clone();
                    let taken_on = connection.load(std::sync::atomic::Ordering::SeqCst);
                    let redelivery = c.redelivery.clone();
                    inflight.spawn(async move {
                        let mut message = Message::new(payload(publish.payload()));
                        let mut meta = empty_object();
                        insert(&mut meta, "topic", Value::from(publish.topic().as_ref()));
                        insert(&mut message.metadata, "mqtt", meta);
                        let outcome = feed.deliver(message, &redelivery, GiveUp::Store).await;
                        if matches!(outcome, Outcome::Left | Outcome::Again(_))
                            || connection.load(std::sync::atomic::Ordering::SeqCst) != taken_on
                        {
                            return;
                        }
                        if let Err(error) = client.ack(&publish).await {
                            tracing::warn!(flow = %feed.flow.name, component, %error, "could not acknowledge; the broker will send it again");
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
        Ok(())
    }
}
