//! Client TLS, read one way for every connector that makes TLS connections: the HTTP client's
//! `client:` block, and the `tls:` block of the Redis (`rediss://`) and MQTT (`mqtts://`)
//! components. Files are read when the component is built, so `weft check` names a missing or
//! bad one at its field; every config is on ring, the binary's one crypto provider.
//!
//! ```yaml
//! tls:
//!   ca_file: /etc/weft/broker-ca.pem   # trust this CA instead of the public roots
//!   cert_file: /etc/weft/client.pem    # present a client certificate (with key_file)
//!   key_file: /etc/weft/client.key
//! ```

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::BuildError;

/// The `tls:` block of a connector whose URL asks for TLS (`rediss://`, `mqtts://`).
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA certificates to trust, instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate (chain), for servers that require one; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// What [`TlsFiles`] name, read once and checked.
pub struct Loaded {
    /// The CA certificates, when `ca_file` is given.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    /// The client certificate chain and its key.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// The files as read, for clients that take PEM themselves (redis, lettre).
    pub pem: Pem,
}

/// The PEM text of each file given.
#[derive(Default)]
pub struct Pem {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

impl TlsFiles {
    /// Reads the files; errors name the field under `prefix` (`tls.ca_file`, `client.ca_file`).
    pub fn load(&self, prefix: &str) -> Result<Loaded, Vec<BuildError>> {
        let err = |field: &str, message: String| {
            vec![BuildError::new(&format!("{prefix}.{field}"), message)]
        };
        let read = |field: &str, path: &str| {
            std::fs::read(path).map_err(|e| err(field, format!("{path}: {e}")))
        };
        let certificates = |field: &str, path: &str, pem: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(field, format!("{path}: {e}")))?;
            if certs.is_empty() {
                return Err(err(field, format!("{path}: no certificate in it")));
            }
            Ok(certs)
        };
        let mut pem = Pem::default();
        let roots = match &self.ca_file {
            None => None,
            Some(path) => {
                let text = read("ca_file", path)?;
                let certs = certificates("ca_file", path, &text)?;
                pem.ca = Some(text);
                Some(certs)
            }
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert_path), Some(key_path)) => {
                let cert_text = read("cert_file", cert_path)?;
                let chain = certificates("cert_file", cert_path, &cert_text)?;
                let key_text = read("key_file", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_text)
                    .map_err(|e| err("key_file", format!("{key_path}: {e}")))?;
                pem.cert = Some(cert_text);
                pem.key = Some(key_text);
                Some((chain, key))
            }
            (Some(_), None) => {
                return Err(err("key_file", "`cert_file` needs its `key_file`".into()));
            }
            (None, Some(_)) => {
                return Err(err("cert_file", "`key_file` needs its `cert_file`".into()));
            }
        };
        Ok(Loaded {
            roots,
            identity,
            pem,
        })
    }

    /// A rustls client config on ring: the CA file's roots (else the public ones), the client
    /// certificate if given, and TLS versions from `min_tls` ("1.2", the default, or "1.3").
    pub fn client_config(
        &self,
        prefix: &str,
        min_tls: Option<&str>,
    ) -> Result<rustls::ClientConfig, Vec<BuildError>> {
        let err = |field: &str, message: String| {
            vec![BuildError::new(&format!("{prefix}.{field}"), message)]
        };
        let versions = tls_versions(min_tls).map_err(|m| err("min_tls", m))?;
        let loaded = self.load(prefix)?;
        let mut roots = rustls::RootCertStore::empty();
        match loaded.roots {
            Some(certs) => {
                let path = self.ca_file.as_deref().unwrap_or_default();
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| err("ca_file", format!("{path}: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .map_err(|e| err("min_tls", e.to_string()))?
        .with_root_certificates(roots);
        match loaded.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err("cert_file", e.to_string())),
        }
    }
}

/// The TLS versions from a `min_tls` field: `"1.2"` (the default, 1.2 and 1.3) or `"1.3"`.
pub fn tls_versions(
    min_tls: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], String> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min_tls {
        None | Some("1.2") => Ok(&BOTH),
        Some("1.3") => Ok(&ONLY_13),
        Some(other) => Err(format!(
            "`{other}` is not a TLS version weft speaks; use \"1.2\" or \"1.3\""
        )),
    }
}

/// The server name to check a certificate against: a host name or an IP address.
pub fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|_| format!("`{host}` is not a host name TLS can check a certificate against"))
}
