//! MQTT 3.1.1 and 5, through `rumqttc`, for the `mqtt` input and output: options from a URL
//! (`mqtt://[user:password@]host:1883`), a client id that stays the same across restarts (so a
//! persistent session finds its subscriptions and unacknowledged messages again). The client
//! reconnects by itself while its event loop is polled. No TLS yet.
//!
//! `rumqttc` has one client per protocol version with the same shape; [`Client`], [`Events`]
//! and [`Received`] put the two behind one interface, so the connectors are written once.

use std::borrow::Cow;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, v5};

use crate::config::Secret;

/// The protocol spoken with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3,
    V5,
}

impl Version {
    /// From a config field: `3.1.1` (also `3` or `4`, the protocol level) or `5`.
    pub fn parse(text: &str) -> Result<Version, String> {
        match text.trim() {
            "3.1.1" | "3" | "4" => Ok(Version::V3),
            "5" | "5.0" => Ok(Version::V5),
            other => Err(format!("MQTT version is 3.1.1 or 5, not `{other}`")),
        }
    }
}

pub fn default_version() -> String {
    "3.1.1".into()
}

/// The JSON Schema of a `version` field: YAML makes a number of a bare `5`, which is as good.
pub fn version_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "enum": ["3.1.1", "3", "4", "5", "5.0", 3, 4, 5] })
}

/// A broker, by URL.
pub struct Mqtt {
    host: String,
    port: u16,
    credentials: Option<(String, Secret)>,
}

impl Mqtt {
    pub fn open(url: &Secret) -> Result<Mqtt, String> {
        let parsed = url::Url::parse(url.expose())
            .ok()
            .filter(|u| u.scheme() == "mqtt" || u.scheme() == "tcp")
            .ok_or("not a valid mqtt:// URL (mqtt://[user:password@]host:1883)")?;
        let host = parsed
            .host_str()
            .ok_or("the URL names no host")?
            .to_string();
        let credentials = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (
                decode(parsed.username()),
                Secret::new(decode(parsed.password().unwrap_or(""))),
            )
        });
        Ok(Mqtt {
            host,
            port: parsed.port().unwrap_or(1883),
            credentials,
        })
    }

    pub fn shown(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }

    /// A client and its event loop. A persistent session (`clean` off) outlives the
    /// connection; under MQTT 5 it is asked never to expire, as under 3.1.1. With
    /// `manual_acks`, a received QoS 1 message is acknowledged by [`Client::ack`] only.
    pub fn connect(
        &self,
        version: Version,
        client_id: &str,
        clean: bool,
        manual_acks: bool,
        capacity: usize,
    ) -> (Client, Events) {
        match version {
            Version::V3 => {
                let mut o = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(clean)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_manual_acks(manual_acks);
                if let Some((user, password)) = &self.credentials {
                    o.set_credentials(user, password.expose());
                }
                let (client, events) = rumqttc::AsyncClient::new(o, capacity);
                (Client::V3(client), Events::V3(events))
            }
            Version::V5 => {
                let mut o = v5::MqttOptions::new(client_id, &self.host, self.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_start(clean)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_manual_acks(manual_acks);
                if !clean {
                    o.set_session_expiry_interval(Some(u32::MAX));
                }
                if let Some((user, password)) = &self.credentials {
                    o.set_credentials(user, password.expose());
                }
                let (client, events) = v5::AsyncClient::new(o, capacity);
                (Client::V5(client), Events::V5(events))
            }
        }
    }
}

/// The sending half of a connection, either version.
#[derive(Clone)]
pub enum Client {
    V3(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// A message the broker sent, kept to acknowledge it.
pub enum Received {
    V3(rumqttc::Publish),
    V5(p5::Publish),
}

/// Why the broker refused a message published to it (MQTT 5 PUBACK reason codes).
#[derive(Debug)]
pub struct Refused {
    pub reason: String,
    /// Sending it again will not help (not authorized, bad topic or payload format).
    pub permanent: bool,
}

/// What the event loop reports, for either version.
pub enum Happened {
    /// A connection was made (or made again).
    Connected,
    Received(Received),
    /// A publish went out with this packet id (0 for QoS 0).
    Sent(u16),
    /// The broker acknowledged the QoS 1 publish with this packet id, or refused it.
    Acked(u16, Result<(), Refused>),
    Other,
}

/// The receiving half of a connection: polling it drives the connection. (One per connection,
/// so the size of the larger variant costs nothing worth boxing for.)
#[allow(clippy::large_enum_variant)]
pub enum Events {
    V3(rumqttc::EventLoop),
    V5(v5::EventLoop),
}

impl Events {
    pub async fn poll(&mut self) -> Result<Happened, String> {
        use rumqttc::{Event, Packet};
        Ok(match self {
            Events::V3(events) => match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => Happened::Connected,
                Event::Incoming(Packet::Publish(p)) => Happened::Received(Received::V3(p)),
                Event::Incoming(Packet::PubAck(a)) => Happened::Acked(a.pkid, Ok(())),
                Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent(pkid),
                _ => Happened::Other,
            },
            Events::V5(events) => match events.poll().await.map_err(|e| e.to_string())? {
                v5::Event::Incoming(p5::Packet::ConnAck(_)) => Happened::Connected,
                v5::Event::Incoming(p5::Packet::Publish(p)) => Happened::Received(Received::V5(p)),
                v5::Event::Incoming(p5::Packet::PubAck(a)) => Happened::Acked(a.pkid, refusal(&a)),
                v5::Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent(pkid),
                _ => Happened::Other,
            },
        })
    }
}

fn refusal(ack: &p5::PubAck) -> Result<(), Refused> {
    use p5::PubAckReason as R;
    let permanent = match ack.reason {
        // No subscriber is not an error: the broker took the message.
        R::Success | R::NoMatchingSubscribers => return Ok(()),
        R::NotAuthorized | R::TopicNameInvalid | R::PayloadFormatInvalid => true,
        _ => false,
    };
    let said = ack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.as_deref())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    Err(Refused {
        reason: format!("the broker refused the message ({:?}{said})", ack.reason),
        permanent,
    })
}

impl Received {
    pub fn topic(&self) -> Cow<'_, str> {
        match self {
            Received::V3(p) => Cow::Borrowed(p.topic.as_str()),
            Received::V5(p) => String::from_utf8_lossy(&p.topic),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Received::V3(p) => &p.payload,
            Received::V5(p) => &p.payload,
        }
    }
}

impl Client {
    /// `level` is 0 or 1, checked when the config was built.
    pub async fn subscribe(&self, filter: &str, level: u8) -> Result<(), String> {
        match self {
            Client::V3(c) => c
                .subscribe(filter, qos3(level))
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(filter, qos5(level))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn publish(
        &self,
        topic: String,
        level: u8,
        retain: bool,
        body: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V3(c) => c
                .publish(topic, qos3(level), retain, body)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish(topic, qos5(level), retain, body)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn ack(&self, received: &Received) -> Result<(), String> {
        match (self, received) {
            (Client::V3(c), Received::V3(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), Received::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("acknowledged on a client of another MQTT version".into()),
        }
    }

    pub async fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V3(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        }
    }
}

fn qos3(level: u8) -> rumqttc::QoS {
    if level == 0 {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    }
}

fn qos5(level: u8) -> v5::mqttbytes::QoS {
    if level == 0 {
        v5::mqttbytes::QoS::AtMostOnce
    } else {
        v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// The largest packet weft sends or takes.
pub const MAX_PACKET: usize = 16 << 20;

/// Why `topic` cannot be published to, if it cannot.
pub fn unpublishable(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("the topic is empty")
    } else if topic.contains(['+', '#']) {
        Some("a topic published to cannot hold the wildcards + or #")
    } else if topic.contains('\0') {
        Some("the topic holds a NUL character")
    } else if topic.len() > 65_535 {
        Some("the topic is longer than 65535 bytes")
    } else {
        None
    }
}

/// weft speaks QoS 0 and 1: at least once is what its acknowledgements give.
pub fn check_qos(level: u8) -> Result<u8, String> {
    match level {
        0 | 1 => Ok(level),
        other => Err(format!("QoS is 0 or 1, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_credentials_and_topics() {
        let mqtt = Mqtt::open(&Secret::new("mqtt://us%40er:p%26ss+word@broker:1884")).unwrap();
        assert_eq!(mqtt.shown(), "mqtt://broker:1884");
        let (user, password) = mqtt.credentials.as_ref().unwrap();
        assert_eq!(user, "us@er");
        assert_eq!(password.expose(), "p&ss+word");
        assert!(Mqtt::open(&Secret::new("http://broker")).is_err());
        assert!(unpublishable("a/b").is_none());
        assert!(unpublishable("a/+/b").is_some());
        assert!(unpublishable("a/#").is_some());
        assert!(unpublishable("").is_some());
        assert_eq!(Version::parse("5"), Ok(Version::V5));
        assert_eq!(Version::parse("3.1.1"), Ok(Version::V3));
        assert!(Version::parse("3.1").is_err());
        assert!(check_qos(2).is_err());
    }

    #[test]
    fn mqtt_5_acknowledgements_tell_refusals_apart() {
        let ack = |reason| p5::PubAck {
            pkid: 1,
            reason,
            properties: None,
        };
        assert!(refusal(&ack(p5::PubAckReason::Success)).is_ok());
        assert!(refusal(&ack(p5::PubAckReason::NoMatchingSubscribers)).is_ok());
        let quota = refusal(&ack(p5::PubAckReason::QuotaExceeded)).unwrap_err();
        assert!(!quota.permanent && quota.reason.contains("QuotaExceeded"));
        let mut denied = ack(p5::PubAckReason::NotAuthorized);
        denied.properties = Some(p5::PubAckProperties {
            reason_string: Some("acl".into()),
            user_properties: vec![],
        });
        let denied = refusal(&denied).unwrap_err();
        assert!(denied.permanent && denied.reason.contains("NotAuthorized: acl"));
    }
}
