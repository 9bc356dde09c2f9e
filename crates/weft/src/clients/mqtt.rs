//! MQTT 3.1.1 and 5, through `rumqttc`, for the `mqtt` input and output: options from a URL
//! (`mqtt://[user:password@]host:1883`, `mqtts://…:8883` for TLS), a client id that stays the
//! same across restarts (so a persistent session finds its subscriptions and unacknowledged
//! messages again). The client reconnects by itself while its event loop is polled.
//!
//! TLS goes through a [`Bridge`] of weft's own rather than rumqttc's TLS feature, which pins a
//! `rustls-webpki` (0.102) with open advisories and a second way to read certificates: rumqttc
//! connects to a private Unix socket, and each connection made there is carried to the broker
//! over rustls with the same config (`tls:` block, ring) as every other TLS client of weft.
//!
//! `rumqttc` has one client per protocol version with the same shape; [`Client`], [`Events`]
//! and [`Received`] put the two behind one interface, so the connectors are written once.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, v5};

use super::tls::TlsFiles;
use crate::config::{BuildError, Secret};

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
    /// For `mqtts://`.
    /// For `mqtts://`: the TLS config and the name the broker's certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Mqtt {
    /// Parses the URL and reads `tls`'s files. Errors name the field and never repeat the
    /// URL, which may hold a password.
    pub fn open(url: &Secret, tls: Option<&TlsFiles>) -> Result<Mqtt, Vec<BuildError>> {
        let bad = |m: &str| vec![BuildError::new("url", m)];
        let parsed = url::Url::parse(url.expose())
            .ok()
            .filter(|u| matches!(u.scheme(), "mqtt" | "tcp" | "mqtts" | "ssl"))
            .ok_or_else(|| {
                bad("not a valid mqtt:// or mqtts:// URL (mqtt://[user:password@]host:1883)")
            })?;
        let secure = matches!(parsed.scheme(), "mqtts" | "ssl");
        let tls = match (secure, tls) {
            (false, Some(_)) => {
                return Err(vec![BuildError::new(
                    "tls",
                    "`tls` is for an mqtts:// URL; this one is mqtt:// (no TLS)",
                )]);
            }
            (false, None) => None,
            (true, files) => Some(Arc::new(
                files
                    .cloned()
                    .unwrap_or_default()
                    .client_config("tls", None)?,
            )),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("the URL names no host"))?
            .to_string();
        let tls = match tls {
            Some(config) => Some((config, super::tls::server_name(&host).map_err(|m| bad(&m))?)),
            None => None,
        };
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
            port: parsed.port().unwrap_or(if secure { 8883 } else { 1883 }),
            credentials,
            tls,
        })
    }

    pub fn shown(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// A client and its event loop. A persistent session (`clean` off) outlives the
    /// connection; under MQTT 5 it is asked never to expire, as under 3.1.1. With
    /// `manual_acks`, a received QoS 1 message is acknowledged by [`Client::ack`] only.
    /// Over TLS it starts a [`Bridge`] (so it needs the runtime), which ends with the events.
    pub fn connect(
        &self,
        version: Version,
        client_id: &str,
        clean: bool,
        manual_acks: bool,
        capacity: usize,
    ) -> Result<(Client, Events), String> {
        let bridge = match &self.tls {
            None => None,
            Some((config, name)) => Some(Bridge::start(
                &self.host,
                self.port,
                config.clone(),
                name.clone(),
            )?),
        };
        let (client, inner) = self.options(
            version,
            client_id,
            clean,
            manual_acks,
            capacity,
            bridge.as_ref(),
        );
        Ok((client, Events { inner, bridge }))
    }

    fn options(
        &self,
        version: Version,
        client_id: &str,
        clean: bool,
        manual_acks: bool,
        capacity: usize,
        bridge: Option<&Bridge>,
    ) -> (Client, Loop) {
        // Over the bridge, rumqttc dials its socket (the port is then unused).
        let (host, port) = match bridge {
            Some(b) => (b.path.to_string_lossy().into_owned(), 0),
            None => (self.host.clone(), self.port),
        };
        match version {
            Version::V3 => {
                let mut o = rumqttc::MqttOptions::new(client_id, host, port);
                if bridge.is_some() {
                    o.set_transport(rumqttc::Transport::Unix);
                }
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(clean)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_manual_acks(manual_acks);
                if let Some((user, password)) = &self.credentials {
                    o.set_credentials(user, password.expose());
                }
                let (client, events) = rumqttc::AsyncClient::new(o, capacity);
                (Client::V3(client), Loop::V3(events))
            }
            Version::V5 => {
                let mut o = v5::MqttOptions::new(client_id, host, port);
                if bridge.is_some() {
                    o.set_transport(rumqttc::Transport::Unix);
                }
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
                (Client::V5(client), Loop::V5(events))
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

/// The receiving half of a connection: polling it drives the connection.
pub struct Events {
    inner: Loop,
    /// The TLS bridge the connection goes through, if it is over TLS.
    bridge: Option<Bridge>,
}

/// One per connection, so the size of the larger variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
enum Loop {
    V3(rumqttc::EventLoop),
    V5(v5::EventLoop),
}

impl Events {
    /// The next event. A connection the TLS bridge could not make fails with the bridge's
    /// reason (a certificate refused, say), not rumqttc's "connection closed".
    pub async fn poll(&mut self) -> Result<Happened, String> {
        let polled = self.poll_inner().await;
        if polled.is_err()
            && let Some(reason) = self.bridge.as_ref().and_then(Bridge::take_error)
        {
            return Err(reason);
        }
        polled
    }

    async fn poll_inner(&mut self) -> Result<Happened, String> {
        use rumqttc::{Event, Packet};
        Ok(match &mut self.inner {
            Loop::V3(events) => match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => Happened::Connected,
                Event::Incoming(Packet::Publish(p)) => Happened::Received(Received::V3(p)),
                Event::Incoming(Packet::PubAck(a)) => Happened::Acked(a.pkid, Ok(())),
                Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent(pkid),
                _ => Happened::Other,
            },
            Loop::V5(events) => match events.poll().await.map_err(|e| e.to_string())? {
                v5::Event::Incoming(p5::Packet::ConnAck(_)) => Happened::Connected,
                v5::Event::Incoming(p5::Packet::Publish(p)) => Happened::Received(Received::V5(p)),
                v5::Event::Incoming(p5::Packet::PubAck(a)) => Happened::Acked(a.pkid, refusal(&a)),
                v5::Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent(pkid),
                _ => Happened::Other,
            },
        })
    }
}

/// Carries each connection made to a private Unix socket (in a directory only this user can
/// open) to the broker over TLS. Dropped, it stops listening and removes the socket;
/// connections already carried end when rumqttc closes its side.
struct Bridge {
    path: std::path::PathBuf,
    listener: tokio::task::JoinHandle<()>,
    /// Why the latest connection failed, until [`Events::poll`] reports it. Only the latest
    /// connection's task may say, so an abandoned attempt cannot put a stale reason there.
    error: Arc<std::sync::Mutex<Option<String>>>,
}

/// Under rumqttc's own 5 s for a connection, so the bridge gives up on a broker first (and a
/// late handshake cannot carry an abandoned CONNECT to the broker).
const TLS_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

impl Bridge {
    fn start(
        host: &str,
        port: u16,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Bridge, String> {
        use std::os::unix::fs::DirBuilderExt;
        // A name no one can guess beforehand, in a directory only this user may enter (made
        // anew: an existing one is an error, not something to reuse).
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "weft-mqtt-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("making {}: {e}", dir.display()))?;
        let path = dir.join("broker");
        let listener = match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("listening on {}: {e}", path.display()));
            }
        };
        let error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let target = (host.trim_matches(['[', ']']).to_string(), port);
        let said = error.clone();
        let latest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener = tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(config);
            while let Ok((mut local, _)) = listener.accept().await {
                let this = latest.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                *said.lock().expect("bridge error lock") = None;
                let (connector, name, target) = (connector.clone(), name.clone(), target.clone());
                let (said, latest) = (said.clone(), latest.clone());
                let say = move |reason: Option<String>| {
                    if latest.load(std::sync::atomic::Ordering::SeqCst) == this {
                        *said.lock().expect("bridge error lock") = reason;
                    }
                };
                tokio::spawn(async move {
                    let connected = tokio::time::timeout(TLS_CONNECT_TIMEOUT, async {
                        let tcp = tokio::net::TcpStream::connect(&target)
                            .await
                            .map_err(|e| e.to_string())?;
                        let _ = tcp.set_nodelay(true);
                        connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| format!("TLS: {e}"))
                    })
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no TLS connection within {TLS_CONNECT_TIMEOUT:?}"))
                    });
                    match connected {
                        Ok(mut remote) => {
                            // Said before `local` closes, so the poll that sees it closed
                            // finds why: under TLS 1.3 a server refuses a client certificate
                            // only after the handshake, with an alert read here.
                            if let Err(e) =
                                tokio::io::copy_bidirectional(&mut local, &mut remote).await
                            {
                                say(Some(format!("TLS: {e}")));
                            }
                        }
                        Err(reason) => say(Some(reason)),
                    }
                });
            }
        });
        Ok(Bridge {
            path,
            listener,
            error,
        })
    }

    fn take_error(&self) -> Option<String> {
        self.error.lock().expect("bridge error lock").take()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
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
        let mqtt = Mqtt::open(&Secret::new("mqtt://us%40er:p%26ss+word@broker:1884"), None)
            .ok()
            .unwrap();
        assert_eq!(mqtt.shown(), "mqtt://broker:1884");
        let (user, password) = mqtt.credentials.as_ref().unwrap();
        assert_eq!(user, "us@er");
        assert_eq!(password.expose(), "p&ss+word");
        assert!(Mqtt::open(&Secret::new("http://broker"), None).is_err());
        let secure = Mqtt::open(&Secret::new("mqtts://broker"), None)
            .ok()
            .unwrap();
        assert_eq!(secure.shown(), "mqtts://broker:8883");
        let files = TlsFiles::default();
        assert!(Mqtt::open(&Secret::new("mqtt://broker"), Some(&files)).is_err());
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
