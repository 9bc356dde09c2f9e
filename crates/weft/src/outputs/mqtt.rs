//! `mqtt`: publishes each message on an MQTT topic — `{{ VRL }}` parts allowed — with QoS 0 or
//! 1: JSON, or a string message's text. With QoS 1 a message counts as delivered only once the
//! broker acknowledged it (PUBACK); with QoS 0 once it was written to the connection.
//!
//! Under MQTT 5 a broker may refuse a publish in its acknowledgement: a refusal that sending
//! again cannot cure (not authorized, invalid topic or payload format) fails the message for
//! good, any other is retried.
//!
//! ```yaml
//! output:
//!   mqtt:
//!     url: mqtt://127.0.0.1:1883
//!     topic: "devices/{{ .device_id }}/commands"
//!     qos: 1
//!     retain: false
//!     version: 5                   # default 3.1.1
//! ```
//!
//! For TLS, `mqtts://host:8883` and, for a private CA or a client certificate, a `tls:` block
//! as on the `mqtt` input.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::mqtt::{
    Client, Happened, MAX_PACKET, Mqtt, Refused, Version, check_qos, default_version, unpublishable,
};
use crate::config::BuildError;
use crate::config::Secret;
use crate::core::retry::RetryConfig;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "MqttOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mqtt://[user:password@]host:1883`, or `mqtts://host:8883` for TLS.
    pub url: Secret,
    /// For an `mqtts://` URL: a private CA, a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<crate::clients::tls::TlsFiles>,
    /// The topic; `{{ expression }}` parts are evaluated per message.
    pub topic: String,
    /// 0 (at most once) or 1 (at least once, the default).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish as the topic's retained message, given to every later subscriber.
    #[serde(default)]
    pub retain: bool,
    /// Default `weft-<random>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The protocol: `3.1.1` (default) or `5`.
    #[serde(default = "default_version")]
    #[schemars(schema_with = "crate::clients::mqtt::version_schema")]
    pub version: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_qos() -> u8 {
    1
}

/// Publishes waiting for the event loop: first for their packet id (in the order they were
/// handed over), then for the broker's acknowledgement of that id.
#[derive(Default)]
struct Waiting {
    unsent: VecDeque<oneshot::Sender<Result<(), Refused>>>,
    unacked: HashMap<u16, oneshot::Sender<Result<(), Refused>>>,
    /// The connection failed: this client is done, and the next publish starts a new one (so
    /// nothing handed to the old one can answer for a newer message).
    dead: bool,
}

impl Waiting {
    fn fail_all(&mut self, why: &str) {
        let failed = || {
            Err(Refused {
                reason: why.to_string(),
                permanent: false,
            })
        };
        for tx in self.unsent.drain(..) {
            let _ = tx.send(failed());
        }
        for (_, tx) in self.unacked.drain() {
            let _ = tx.send(failed());
        }
    }
}

pub struct MqttOutput {
    mqtt: Mqtt,
    topic: Template,
    qos: u8,
    retain: bool,
    version: Version,
    client_id: String,
    /// The client and what waits for it, started on first use (the event loop needs the
    /// runtime). Held while a publish is handed over, so packet ids come back in order.
    client: tokio::sync::Mutex<Option<(Client, Arc<Mutex<Waiting>>)>>,
}

impl super::Spec for Config {
    type Built = MqttOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<MqttOutput, Vec<BuildError>> {
        let mqtt = Mqtt::open(&self.url, self.tls.as_ref())?;
        let topic = Template::parse(&self.topic, Escape::None)
            .map_err(|d| BuildError::from_diagnostics("topic", d))?;
        let qos = check_qos(self.qos).map_err(|e| vec![BuildError::new("qos", e)])?;
        let version =
            Version::parse(&self.version).map_err(|e| vec![BuildError::new("version", e)])?;
        Ok(MqttOutput {
            mqtt,
            topic,
            qos,
            retain: self.retain,
            version,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| format!("weft-{:016x}", fastrand::u64(..))),
            client: tokio::sync::Mutex::new(None),
        })
    }
}

impl MqttOutput {
    fn retry(&self, e: impl std::fmt::Display) -> Attempt {
        Attempt::Retryable {
            reason: format!("mqtt {}: {e}", self.mqtt.shown()),
            retry_after: None,
            response: None,
        }
    }

    /// A client with its event loop running.
    fn start(&self) -> Result<(Client, Arc<Mutex<Waiting>>), String> {
        let (client, mut events) =
            self.mqtt
                .connect(self.version, &self.client_id, true, false, 256)?;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let w = waiting.clone();
        tokio::spawn(async move {
            loop {
                let event = events.poll().await;
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(Happened::Sent(pkid)) => {
                        if let Some(tx) = w.unsent.pop_front() {
                            if pkid == 0 {
                                let _ = tx.send(Ok(()));
                            } else {
                                w.unacked.insert(pkid, tx);
                            }
                        }
                    }
                    Ok(Happened::Acked(pkid, outcome)) => {
                        if let Some(tx) = w.unacked.remove(&pkid) {
                            let _ = tx.send(outcome);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // What was under way may or may not have arrived: it is retried.
                        w.fail_all(&e);
                        w.dead = true;
                        return;
                    }
                }
            }
        });
        Ok((client, waiting))
    }
}

impl crate::core::Output for MqttOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let topic = match self.topic.render(&message.value, &message.metadata) {
            Ok(t) => t,
            Err(reason) => {
                return Attempt::Fatal {
                    reason: format!("topic: {reason}"),
                    response: None,
                };
            }
        };
        if let Some(why) = unpublishable(&topic) {
            return Attempt::Fatal {
                reason: format!("topic `{topic}`: {why}"),
                response: None,
            };
        }
        let body = message.body();
        if body.len() + topic.len() + 16 > MAX_PACKET {
            return Attempt::Fatal {
                reason: format!(
                    "the message ({} bytes) is larger than an MQTT packet weft sends",
                    body.len()
                ),
                response: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut current = self.client.lock().await;
            let alive = current
                .as_ref()
                .is_some_and(|(_, w)| !w.lock().unwrap_or_else(|e| e.into_inner()).dead);
            if !alive {
                match self.start() {
                    Ok(started) => *current = Some(started),
                    Err(e) => return self.retry(e),
                }
            }
            let Some((client, waiting)) = current.as_ref() else {
                return self.retry("no MQTT client");
            };
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unsent
                .push_back(tx);
            if let Err(e) = client
                .publish(topic, self.qos, self.retain, body.to_vec())
                .await
            {
                // The topic was checked above: the event loop is gone. Nothing was handed
                // over; the next publish starts a new client.
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.unsent.pop_back();
                w.dead = true;
                return self.retry(e);
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Ok(()))) => Attempt::Delivered,
            Ok(Ok(Err(refused))) if refused.permanent => Attempt::Fatal {
                reason: format!("mqtt {}: {}", self.mqtt.shown(), refused.reason),
                response: None,
            },
            Ok(Ok(Err(refused))) => self.retry(refused.reason),
            Ok(Err(_)) => self.retry("the MQTT client stopped"),
            Err(_) => self.retry("no acknowledgement within 30s"),
        }
    }

    fn reads_metadata(&self) -> bool {
        self.topic.reads_metadata()
    }
}
