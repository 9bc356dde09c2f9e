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
                url::form_urlencoded::parse(s.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default()
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
        options.set_max_packet_size(16 << 20, 16 << 20);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password.expose());
        }
        options
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
