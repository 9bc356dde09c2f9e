//! SFTP for the `sftp` input and output: one SSH connection per component (russh on ring,
//! russh-sftp over its channel), made when first needed and made again after it broke.
//!
//! The server must prove it is the one meant before anything is sent: its host key is checked
//! against `host_key` (a `SHA256:` fingerprint or the public key), else a `known_hosts` file
//! (`~/.ssh/known_hosts` by default), and an unknown server is refused with the fingerprint it
//! offered, so the user can check it and pin it. Login is by private key (ed25519 or ECDSA in
//! OpenSSH format; RSA keys are refused, since the `rsa` crate has an unfixed timing
//! advisory) and/or password.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use russh::client;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::units::Dur;
use crate::config::{BuildError, Secret};

/// Where the server is and how to log in: the `server:` block of the `sftp` input and output.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SftpServer")]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `sftp://user@host[:port]` (port 22 by default).
    pub url: String,
    /// The user's password, if the server takes one.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A private key file in OpenSSH format (ed25519 or ECDSA), tried before the password.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The private key's passphrase, if it has one.
    #[serde(default)]
    pub passphrase: Option<Secret>,
    /// The server's host key: its fingerprint (`SHA256:…`, as `ssh-keygen -lf` shows it) or
    /// its public key (`ssh-ed25519 AAAA…`). Without it, the server must be in `known_hosts`.
    #[serde(default)]
    pub host_key: Option<String>,
    /// A `known_hosts` file that must list the server. Default `~/.ssh/known_hosts`.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Time allowed to connect and log in, and for each request. Default 30s.
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// How the server's host key is judged.
#[derive(Clone)]
enum Trust {
    Fingerprint(String),
    Key(Box<KeyData>),
    KnownHosts(PathBuf),
}

/// An SFTP server and, once made, the connection to it.
pub struct Sftp {
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    key: Option<Arc<PrivateKey>>,
    trust: Trust,
    timeout: Duration,
    connection: tokio::sync::Mutex<Held>,
}

/// The connection, or the last failed attempt to make one: that is answered again for a while
/// rather than tried at once, so a listing of many files, or many messages, wait one timeout,
/// not one each, and a refused login is not hammered into the server's lockout.
#[derive(Default)]
struct Held {
    connection: Option<Arc<Connection>>,
    failed: Option<(std::time::Instant, Fault)>,
}

struct Connection {
    ssh: client::Handle<Checker>,
    sftp: SftpSession,
}

/// Why an SFTP operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// No such file or directory.
    #[error("no such file")]
    Missing,
    /// The server could not be reached, or broke off, or said something may get better.
    #[error("{0}")]
    Again(String),
    /// The server refused, and will refuse again.
    #[error("{0}")]
    Failed(String),
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a failed connection attempt is answered again without trying.
const CONNECT_PAUSE: Duration = Duration::from_secs(2);

impl Sftp {
    /// Checks the `server:` block; errors name its fields under `field`.
    pub fn build(config: &ServerConfig, field: &str) -> Result<Sftp, Vec<BuildError>> {
        let mut errors = Vec::new();
        let at = |name: &str| format!("{field}.{name}");
        let target = url::Url::parse(&config.url)
            .map_err(|e| e.to_string())
            .and_then(|url| {
                if url.scheme() != "sftp" {
                    return Err("is not an sftp:// URL".into());
                }
                if url.password().is_some() {
                    return Err("holds a password: give it as `password` (a secret)".into());
                }
                if !matches!(url.path(), "" | "/") || url.query().is_some() {
                    return Err("names a path: give it as the component's `path`".into());
                }
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or("names no host")?;
                if url.username().is_empty() {
                    return Err("names no user: sftp://user@host".into());
                }
                let user = percent_encoding::percent_decode_str(url.username())
                    .decode_utf8_lossy()
                    .into_owned();
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                Ok((host, url.port().unwrap_or(22), user))
            })
            .map_err(|e| errors.push(BuildError::new(&at("url"), e)))
            .ok();
        let key = config.private_key.as_ref().and_then(|path| {
            load_key(path, config.passphrase.as_ref())
                .map_err(|e| errors.push(BuildError::new(&at("private_key"), e)))
                .ok()
        });
        if config.passphrase.is_some() && config.private_key.is_none() {
            errors.push(BuildError::new(
                &at("passphrase"),
                "is given without `private_key`",
            ));
        }
        if config.password.is_none() && config.private_key.is_none() {
            errors.push(BuildError::new(
                field,
                "gives no way to log in: set `password` or `private_key`",
            ));
        }
        let trust = match (&config.host_key, &config.known_hosts) {
            (Some(_), Some(_)) => {
                errors.push(BuildError::new(
                    &at("known_hosts"),
                    "is given with `host_key`: use one of them",
                ));
                None
            }
            (Some(pinned), None) => parse_host_key(pinned)
                .map_err(|e| errors.push(BuildError::new(&at("host_key"), e)))
                .ok(),
            (None, Some(path)) => Some(Trust::KnownHosts(path.clone())),
            (None, None) => match std::env::home_dir() {
                Some(home) => Some(Trust::KnownHosts(home.join(".ssh/known_hosts"))),
                None => {
                    errors.push(BuildError::new(
                        &at("host_key"),
                        "is needed: there is no home directory for ~/.ssh/known_hosts",
                    ));
                    None
                }
            },
        };
        let timeout = config.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            errors.push(BuildError::new(&at("timeout"), "must be above zero"));
        }
        match (target, trust) {
            (Some((host, port, user)), Some(trust)) if errors.is_empty() => Ok(Sftp {
                host,
                port,
                user,
                password: config.password.clone(),
                key: key.map(Arc::new),
                trust,
                timeout,
                connection: Default::default(),
            }),
            _ => Err(errors),
        }
    }

    /// `sftp://user@host:port/path`, for messages and logs.
    pub fn shown(&self, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("sftp://{}@{host}:{}{slash}{path}", self.user, self.port)
    }

    /// The connection, made now if there is none or the last one broke.
    async fn session(&self) -> Result<Arc<Connection>, Fault> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = &held.connection
            && !connection.ssh.is_closed()
        {
            return Ok(connection.clone());
        }
        held.connection = None;
        if let Some((at, fault)) = &held.failed
            && at.elapsed() < CONNECT_PAUSE
        {
            return Err(fault.clone());
        }
        match self.connect().await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *held = Held {
                    connection: Some(connection.clone()),
                    failed: None,
                };
                Ok(connection)
            }
            Err(fault) => {
                held.failed = Some((std::time::Instant::now(), fault.clone()));
                Err(fault)
            }
        }
    }

    /// Forgets a connection that failed, so the next call makes a new one.
    async fn broken(&self, failed: &Arc<Connection>) {
        let mut held = self.connection.lock().await;
        if held
            .connection
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, failed))
        {
            held.connection = None;
        }
    }

    async fn connect(&self) -> Result<Connection, Fault> {
        let server = format!("{}:{}", self.host, self.port);
        let unreachable = |e: &dyn std::fmt::Display| Fault::Again(format!("{server}: {e}"));
        let tcp = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(&"no connection within the timeout"))?
        .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let checker = Checker {
            trust: self.trust.clone(),
            host: self.host.clone(),
            port: self.port,
            refusal: refusal.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            nodelay: true,
            // No RSA host keys: without the `rsa` crate they could not be verified.
            preferred: russh::Preferred {
                key: std::borrow::Cow::Owned(
                    russh::Preferred::DEFAULT
                        .key
                        .iter()
                        .filter(|a| !(*a).clone().is_rsa())
                        .cloned()
                        .collect(),
                ),
                ..russh::Preferred::DEFAULT
            },
            ..Default::default()
        });
        let handshake = within(self.timeout, client::connect_stream(config, tcp, checker)).await;
        let mut ssh = match handshake {
            Ok(ssh) => ssh,
            Err(e) => {
                // A host key refused is said as the checker saw it, and will not get better.
                let refused = refusal.lock().ok().and_then(|mut r| r.take());
                return Err(match refused {
                    Some(why) => Fault::Failed(format!("{server}: {why}")),
                    None => unreachable(&e),
                });
            }
        };
        let mut logged_in = false;
        if let Some(key) = &self.key {
            let key = PrivateKeyWithHashAlg::new(key.clone(), None);
            logged_in = within(
                self.timeout,
                ssh.authenticate_publickey(self.user.as_str(), key),
            )
            .await
            .map_err(|e| unreachable(&e))?
            .success();
        }
        if !logged_in && let Some(password) = &self.password {
            logged_in = within(
                self.timeout,
                ssh.authenticate_password(self.user.as_str(), password.expose()),
            )
            .await
            .map_err(|e| unreachable(&e))?
            .success();
        }
        if !logged_in {
            // Tried again: a password may be being rotated, a key being installed.
            return Err(Fault::Again(format!(
                "{server}: the server refused the login of `{}`",
                self.user
            )));
        }
        let channel = within(self.timeout, ssh.channel_open_session())
            .await
            .map_err(|e| unreachable(&e))?;
        within(self.timeout, channel.request_subsystem(true, "sftp"))
            .await
            .map_err(|e| unreachable(&e))?;
        let sftp = tokio::time::timeout(self.timeout, SftpSession::new(channel.into_stream()))
            .await
            .map_err(|_| unreachable(&"the SFTP subsystem did not answer"))?
            .map_err(|e| unreachable(&e))?;
        sftp.set_timeout(self.timeout.as_secs().max(1));
        Ok(Connection { ssh, sftp })
    }

    /// Runs `op` on the connection; a connection that broke is forgotten.
    async fn with<T, F>(
        &self,
        path: &str,
        op: impl FnOnce(Arc<Connection>) -> F,
    ) -> Result<T, Fault>
    where
        F: Future<Output = Result<T, SftpError>>,
    {
        let connection = self.session().await?;
        match op(connection.clone()).await {
            Ok(done) => Ok(done),
            Err(e) => {
                // Only a connection that timed out or closed is made again; a refusal said
                // while writing (a full disk) comes as an I/O error on a sound one.
                if matches!(e, SftpError::Timeout | SftpError::UnexpectedBehavior(_))
                    || connection.ssh.is_closed()
                {
                    self.broken(&connection).await;
                }
                Err(judge(e, &self.shown(path)))
            }
        }
    }

    /// The entries of a directory: name and attributes (`.` and `..` left out).
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, FileAttributes)>, Fault> {
        let dir_owned = dir.to_string();
        self.with(dir, |c| async move {
            let entries = c.sftp.read_dir(dir_owned).await?;
            Ok(entries
                .map(|e| (e.file_name(), e.metadata()))
                .filter(|(name, _)| name != "." && name != "..")
                .collect())
        })
        .await
    }

    /// A file's bytes (at most `max + 1`, so a caller sees one grown past its limit) and its
    /// attributes as the open file has them after the read.
    pub async fn read(&self, path: &str, max: u64) -> Result<(Vec<u8>, FileAttributes), Fault> {
        let owned = path.to_string();
        self.with(path, |c| async move {
            let mut file = c.sftp.open(owned).await?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(max.saturating_add(1))
                .read_to_end(&mut bytes)
                .await?;
            let attributes = file.metadata().await?;
            file.shutdown().await?;
            Ok((bytes, attributes))
        })
        .await
    }

    /// A file's attributes.
    pub async fn stat(&self, path: &str) -> Result<FileAttributes, Fault> {
        let owned = path.to_string();
        self.with(path, |c| async move { c.sftp.metadata(owned).await })
            .await
    }

    /// Removes a file; one already gone is fine.
    pub async fn remove(&self, path: &str) -> Result<(), Fault> {
        let owned = path.to_string();
        match self
            .with(path, |c| async move { c.sftp.remove_file(owned).await })
            .await
        {
            Err(Fault::Missing) => Ok(()),
            other => other,
        }
    }

    /// Renames `from` to `to`, replacing a file there. (SFTP version 3 refuses to rename onto an
    /// existing file, so that file is removed first: the replacement is not atomic.)
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), Fault> {
        let (a, b) = (from.to_string(), to.to_string());
        let first = self
            .with(from, |c| async move { c.sftp.rename(a, b).await })
            .await;
        match first {
            Err(Fault::Failed(_)) if self.exists(to).await? => {
                self.remove(to).await?;
                let (a, b) = (from.to_string(), to.to_string());
                self.with(from, |c| async move { c.sftp.rename(a, b).await })
                    .await
            }
            other => other,
        }
    }

    async fn exists(&self, path: &str) -> Result<bool, Fault> {
        let owned = path.to_string();
        self.with(path, |c| async move { c.sftp.try_exists(owned).await })
            .await
    }

    /// Makes a directory and the ones above it that are missing.
    pub async fn make_dirs(&self, dir: &str) -> Result<(), Fault> {
        let mut made = String::new();
        for part in dir.split('/') {
            if part.is_empty() {
                if made.is_empty() {
                    made.push('/');
                }
                continue;
            }
            if !made.is_empty() && !made.ends_with('/') {
                made.push('/');
            }
            made.push_str(part);
            if self.exists(&made).await? {
                continue;
            }
            let owned = made.clone();
            match self
                .with(&made, |c| async move { c.sftp.create_dir(owned).await })
                .await
            {
                // Made meanwhile by another writer.
                Err(Fault::Failed(_)) if self.exists(&made).await? => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Writes a whole file: to a dot-name beside it first, then renamed into place, so a reader
    /// of the directory never sees it half-written. Missing directories are made.
    pub async fn write(&self, path: &str, bytes: &[u8]) -> Result<(), Fault> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => ("", path),
        };
        if name.is_empty() {
            return Err(Fault::Failed(format!(
                "{}: names no file",
                self.shown(path)
            )));
        }
        // Random, so writers on several machines never share one (and `EXCLUDE` makes sure).
        let temp = format!(
            "{}{}.{name}.{:016x}.part",
            dir,
            if dir.is_empty() && !path.starts_with('/') {
                ""
            } else {
                "/"
            },
            fastrand::u64(..)
        );
        let put = |temp: String, data: Vec<u8>| {
            self.with(path, |c| async move {
                let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
                let mut file = c.sftp.open_with_flags(temp, flags).await?;
                file.write_all(&data).await?;
                file.sync_all().await?;
                file.shutdown().await?;
                Ok(())
            })
        };
        match put(temp.clone(), bytes.to_vec()).await {
            Err(Fault::Missing) if !dir.is_empty() => {
                self.make_dirs(dir).await?;
                put(temp.clone(), bytes.to_vec()).await?;
            }
            other => other?,
        }
        if let Err(e) = self.rename(&temp, path).await {
            let _ = self.remove(&temp).await;
            return Err(e);
        }
        Ok(())
    }
}

/// `what`, given at most `limit`; its error as text.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, what).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within the timeout".to_string()),
    }
}

/// What an SFTP error means for the caller.
fn judge(error: SftpError, shown: &str) -> Fault {
    match error {
        SftpError::Status(status) => {
            let said = if status.error_message.is_empty() {
                status.status_code.to_string()
            } else {
                format!("{}: {}", status.status_code, status.error_message)
            };
            match status.status_code {
                StatusCode::NoSuchFile => Fault::Missing,
                StatusCode::PermissionDenied
                | StatusCode::OpUnsupported
                | StatusCode::BadMessage
                | StatusCode::Failure => Fault::Failed(format!("{shown}: {said}")),
                _ => Fault::Again(format!("{shown}: {said}")),
            }
        }
        SftpError::Limited(e) => Fault::Failed(format!("{shown}: {e}")),
        SftpError::Timeout => Fault::Again(format!("{shown}: no answer within the timeout")),
        other => Fault::Again(format!("{shown}: {other}")),
    }
}

/// A private key from a file; RSA keys are refused (see the module's docs).
fn load_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = russh::keys::decode_secret_key(&text, passphrase.map(Secret::expose)).map_err(
        |e| match e {
            russh::keys::Error::KeyIsEncrypted => {
                format!(
                    "{}: the key is encrypted: give its `passphrase`",
                    path.display()
                )
            }
            e => format!("{}: {e}", path.display()),
        },
    )?;
    if key.algorithm().is_rsa() {
        return Err(format!(
            "{}: RSA keys are not supported (the `rsa` crate has an unfixed timing advisory): \
             use an ed25519 or ECDSA key",
            path.display()
        ));
    }
    Ok(key)
}

/// `SHA256:…` or a public key line (`ssh-ed25519 AAAA… comment`).
fn parse_host_key(text: &str) -> Result<Trust, String> {
    let text = text.trim();
    if let Some(hash) = text.strip_prefix("SHA256:") {
        if hash.is_empty() {
            return Err("is an empty fingerprint".into());
        }
        return Ok(Trust::Fingerprint(text.to_string()));
    }
    let key = PublicKey::from_openssh(text)
        .map_err(|_| "is neither a SHA256: fingerprint nor an OpenSSH public key".to_string())?;
    if key.algorithm().is_rsa() {
        return Err("is an RSA key: weft verifies ed25519 and ECDSA host keys only".into());
    }
    Ok(Trust::Key(Box::new(key.key_data().clone())))
}

/// Judges the server's host key when the connection is made.
struct Checker {
    trust: Trust,
    host: String,
    port: u16,
    /// Why the key was refused, for the error the caller sees.
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

impl Checker {
    fn judge(&self, offered: &KeyData) -> Result<(), String> {
        let fingerprint = offered.fingerprint(HashAlg::Sha256).to_string();
        match &self.trust {
            Trust::Fingerprint(pinned) if *pinned == fingerprint => Ok(()),
            Trust::Key(pinned) if **pinned == *offered => Ok(()),
            Trust::Fingerprint(_) | Trust::Key(_) => Err(format!(
                "the server's host key ({fingerprint}) is not the one in `host_key`"
            )),
            Trust::KnownHosts(path) => {
                let key = PublicKey::from(offered.clone());
                match russh::keys::check_known_hosts_path(&self.host, self.port, &key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "the server is not in {} (its host key is {fingerprint}): check it, \
                         then add it there or set `host_key: \"{fingerprint}\"`",
                        path.display()
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                        "the server's host key ({fingerprint}) differs from the one on line \
                         {line} of {}",
                        path.display()
                    )),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(certificate) => certificate.public_key(),
        };
        match self.judge(key) {
            Ok(()) => Ok(true),
            Err(why) => {
                if let Ok(mut refusal) = self.refusal.lock() {
                    *refusal = Some(why);
                }
                Ok(false)
            }
        }
    }
}

/// A file's modification time as the server gave it.
pub fn modified(attributes: &FileAttributes) -> Option<SystemTime> {
    attributes
        .mtime
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: serde_json::Value) -> Vec<String> {
        let config: ServerConfig = serde_json::from_value(json).unwrap();
        match Sftp::build(&config, "server") {
            Ok(_) => vec![],
            Err(errors) => errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        }
    }

    fn with(url: &str) -> serde_json::Value {
        serde_json::json!({"url": url, "password": "x", "host_key": "SHA256:abc"})
    }

    #[test]
    fn the_url_names_user_and_host_and_no_password() {
        let config: ServerConfig =
            serde_json::from_value(with("sftp://weft@files.example:2222")).unwrap();
        let sftp = Sftp::build(&config, "server").unwrap();
        assert_eq!(
            sftp.shown("/in/a.xml"),
            "sftp://weft@files.example:2222/in/a.xml"
        );
        assert_eq!(
            errors(with("sftp://files.example")),
            ["server.url: names no user: sftp://user@host"]
        );
        assert_eq!(
            errors(with("sftp://u:p@files.example")),
            ["server.url: holds a password: give it as `password` (a secret)"]
        );
        assert_eq!(
            errors(with("https://u@files.example")),
            ["server.url: is not an sftp:// URL"]
        );
    }

    #[test]
    fn a_login_and_one_way_to_trust_the_server_are_needed() {
        assert_eq!(
            errors(serde_json::json!({"url": "sftp://u@h", "host_key": "SHA256:abc"})),
            ["server: gives no way to log in: set `password` or `private_key`"]
        );
        let mut both = with("sftp://u@h");
        both["known_hosts"] = "/k".into();
        assert_eq!(
            errors(both),
            ["server.known_hosts: is given with `host_key`: use one of them"]
        );
        let mut nonsense = with("sftp://u@h");
        nonsense["host_key"] = "nonsense".into();
        assert_eq!(
            errors(nonsense),
            ["server.host_key: is neither a SHA256: fingerprint nor an OpenSSH public key"]
        );
    }

    #[test]
    fn rsa_keys_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("weft-sftp-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("id_rsa");
        std::fs::write(&path, RSA_KEY).unwrap();
        let refused = load_key(&path, None).err().unwrap();
        assert!(refused.contains("RSA keys are not supported"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A throwaway key (`ssh-keygen -t rsa -b 1024 -N ''`), only ever parsed here.
    const RSA_KEY: &str = include_str!("../../tests/fixtures/ssh-rsa-test-only");
}
