//! TLS for weft's servers (`http_server` inputs and the admin endpoint): rustls with the ring
//! provider, a certificate chain and key from PEM files, and optionally client certificates
//! checked against a CA (mutual TLS: a client without a valid certificate never gets past the
//! handshake).
//!
//! The files are read when the config is loaded (so `weft check` reports a bad one), then
//! watched: a change to any of them (by content), or SIGHUP, reads them again. Connections
//! already open keep the settings they were accepted with. A new certificate is used for
//! the connections accepted after it; a file that does not load keeps the one in use, and says
//! why in the log.
//!
//! ```yaml
//! tls:
//!   cert_file: /etc/weft/tls/server.pem       # the chain, leaf first
//!   key_file: /etc/weft/tls/server.key
//!   client_ca_file: /etc/weft/tls/clients.pem # optional: require client certificates
//!   min_tls: "1.3"                            # optional, default "1.2"
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::BuildError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file of the certificate's private key.
    pub key_file: String,
    /// PEM file of the CA certificates client certificates must chain to (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_tls: Option<String>,
}

/// The largest certificate, key or CA file looked at for changes.
const MAX_PEM_FILE: u64 = 4 << 20;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A server's TLS settings, reloadable while it runs.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' digests when last read.
    stamp: Mutex<Vec<Option<ring::digest::Digest>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish()
    }
}

/// A problem with one of the files: the field and what is wrong (never the file's contents).
type Problem = (&'static str, String);

impl TlsConfig {
    /// Reads the files and builds the settings; errors name the field (`tls.cert_file`…).
    pub fn load(&self) -> Result<Tls, Vec<BuildError>> {
        let stamp = self.stamp();
        let server = self
            .server_config()
            .map_err(|(field, m)| vec![BuildError::new(&format!("tls.{field}"), m)])?;
        Ok(Tls {
            config: self.clone(),
            current: RwLock::new(Arc::new(server)),
            stamp: Mutex::new(stamp),
        })
    }

    fn files(&self) -> Vec<&str> {
        let mut files = vec![self.cert_file.as_str(), self.key_file.as_str()];
        files.extend(self.client_ca_file.as_deref());
        files
    }

    /// The files' contents, by digest: a copy that keeps the time and size (`cp -p`) is seen.
    /// Only regular files of a sane size are read.
    fn stamp(&self) -> Vec<Option<ring::digest::Digest>> {
        self.files()
            .into_iter()
            .map(|f| {
                let bytes = read_pem(f).ok()?;
                Some(ring::digest::digest(&ring::digest::SHA256, &bytes))
            })
            .collect()
    }

    fn server_config(&self) -> Result<rustls::ServerConfig, Problem> {
        let versions = crate::clients::tls::tls_versions(self.min_tls.as_deref())
            .map_err(|m| ("min_tls", m))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert_pem = read_pem(&self.cert_file).map_err(|m| ("cert_file", m))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("cert_file", format!("{}: {e}", self.cert_file)))?;
        if chain.is_empty() {
            return Err((
                "cert_file",
                format!("{}: no certificate in it", self.cert_file),
            ));
        }
        let key_pem = read_pem(&self.key_file).map_err(|m| ("key_file", m))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| ("key_file", format!("{}: {e}", self.key_file)))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| ("min_tls", e.to_string()))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let ca_pem = read_pem(path).map_err(|m| ("client_ca_file", m))?;
                let certs = CertificateDer::pem_slice_iter(&ca_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ("client_ca_file", format!("{path}: {e}")))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| ("client_ca_file", format!("{path}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(("client_ca_file", format!("{path}: no certificate in it")));
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ("client_ca_file", format!("{path}: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| ("key_file", format!("{}: {e}", self.key_file)))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A PEM file's bytes: a regular file of a sane size (a device or a FIFO named by mistake
/// must not hang the loader or the watcher).
fn read_pem(path: &str) -> Result<Vec<u8>, String> {
    crate::config::read_bounded(path, MAX_PEM_FILE).map_err(|why| format!("{path}: {why}"))
}

impl Tls {
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// An acceptor with the settings in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Reads the files again when they changed (or always, when `forced`). A set that does not
    /// load leaves the one in use.
    pub fn reload(&self, forced: bool) -> Result<bool, String> {
        let stamp = self.config.stamp();
        {
            let mut seen = self.stamp.lock().expect("tls lock");
            let same = seen.len() == stamp.len()
                && seen.iter().zip(&stamp).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a.as_ref() == b.as_ref(),
                    (None, None) => true,
                    _ => false,
                });
            if !forced && same {
                return Ok(false);
            }
            // A broken file is reported once per change, not on every look.
            *seen = stamp;
        }
        let server = self
            .config
            .server_config()
            .map_err(|(field, m)| format!("tls.{field}: {m}"))?;
        *self.current.write().expect("tls lock") = Arc::new(server);
        Ok(true)
    }

    /// Reloads on a change to the files and on SIGHUP, until `shutdown`.
    pub async fn watch(self: Arc<Self>, what: String, shutdown: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut every = tokio::time::interval(WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            // File reads stay off the runtime's workers.
            let tls = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || tls.reload(forced))
                .await
                .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
            match reloaded {
                Ok(true) => {
                    tracing::info!(server = %what, cert = %self.config.cert_file, "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(server = %what, error = %e, "TLS files did not load; the certificate in use is kept")
                }
            }
        }
    }
}
