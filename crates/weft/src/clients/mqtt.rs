//! MQTT 3.1.1, through `rumqttc`, for the `mqtt` input and output: options from a URL
//! (`mqtt://[user:password@]host:1883`), a client id that stays the same across restarts (so a
//! persistent session finds its subscriptions and unacknowledged messages again). The client
//! reconnects by itself while its event loop is polled. No TLS yet.

use std::time::Duration;

use rumqttc::MqttOptions;

use super::secret::Secret;

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

    pub fn options(&self, client_id: &str, clean_session: bool) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(clean_session);
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password.expose());
        }
        options
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

pub fn qos(level: u8) -> Result<rumqttc::QoS, String> {
    match level {
        0 => Ok(rumqttc::QoS::AtMostOnce),
        1 => Ok(rumqttc::QoS::AtLeastOnce),
        2 => Ok(rumqttc::QoS::ExactlyOnce),
        other => Err(format!("QoS is 0, 1 or 2, not {other}")),
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
    }
}
