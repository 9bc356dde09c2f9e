//! Kafka for the `kafka` input and output: rdkafka over librdkafka, built from its bundled
//! source behind the `kafka` cargo feature (on by default). Plaintext connections only: TLS
//! and SASL would bring OpenSSL, a second crypto stack, into the binary.
//!
//! What the two share: the broker list (checked when the flow is built) and how librdkafka's
//! own log lines reach weft's log.

use crate::config::BuildError;

/// Checks `brokers` (`host:port` each) and joins them as librdkafka takes them; a weft built
/// without the `kafka` feature refuses them, and so every Kafka component.
pub fn brokers(brokers: &[String]) -> Result<String, BuildError> {
    if !cfg!(feature = "kafka") {
        return Err(BuildError::new(
            "brokers",
            "this weft was built without Kafka (the `kafka` cargo feature)",
        ));
    }
    if brokers.is_empty() {
        return Err(BuildError::new("brokers", "name at least one `host:port`"));
    }
    for broker in brokers {
        let port = broker
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() && !broker.contains("://") => {}
            _ => {
                return Err(BuildError::new(
                    "brokers",
                    format!("`{broker}` is not `host:port` (plaintext only: no `ssl://`)"),
                ));
            }
        }
    }
    Ok(brokers.join(","))
}

#[cfg(feature = "kafka")]
pub use client::*;

#[cfg(feature = "kafka")]
mod client {
    use rdkafka::ClientContext;
    use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

    /// The settings every weft client has: the brokers, a client id naming weft, and
    /// librdkafka's log lines at warning and above.
    pub fn config(brokers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "weft")
            .set_log_level(RDKafkaLogLevel::Warning);
        config
    }

    /// Hands librdkafka's log lines to weft's log, naming the component.
    pub struct Logged(pub &'static str);

    impl ClientContext for Logged {
        fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
            let component = self.0;
            match level {
                RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error => {
                    tracing::error!(component, facility, "{line}")
                }
                RDKafkaLogLevel::Warning => tracing::warn!(component, facility, "{line}"),
                _ => tracing::debug!(component, facility, "{line}"),
            }
        }

        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            tracing::warn!(component = self.0, %error, "{reason}");
        }
    }

    impl rdkafka::consumer::ConsumerContext for Logged {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn brokers_are_host_and_port() {
        assert_eq!(
            super::brokers(&["a:9092".into(), "b:9093".into()]).unwrap(),
            "a:9092,b:9093"
        );
        for wrong in ["a", "ssl://a:9093", ":9092", "a:port"] {
            assert!(super::brokers(&[wrong.into()]).is_err(), "{wrong}");
        }
        assert!(super::brokers(&[]).is_err());
    }
}
