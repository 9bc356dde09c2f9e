//! `smtp`: sends each message as an e-mail through an SMTP server (`lettre`, rustls on ring):
//! addresses, subject and bodies are `{{ VRL }}` templates of the message, a plain-text body,
//! an HTML one or both (as alternatives), and attachments taken from the message.
//!
//! A message counts as delivered once the server accepted it (`250` after `DATA`). A refusal
//! the server calls temporary (`4xx`: a greylist, a full mailbox), a refused login (the
//! password may be being rotated) or a connection that failed is retried; any other permanent
//! one (`5xx`: no such mailbox) fails the message for good. Connections are pooled and reused.
//!
//! ```yaml
//! output:
//!   smtp:
//!     url: smtp://alerts%40example.com:${SMTP_PASSWORD}@smtp.example.com:587  # STARTTLS
//!     from: "Shop <orders@example.com>"
//!     to: "{{ .customer.email }}"             # several: comma-separated
//!     bcc: archive@example.com
//!     subject: "Order {{ .id }} has shipped"
//!     text: "Hello {{ .customer.name }}, your order {{ .id }} is on its way."
//!     html: "{{ .html }}"                      # made by a `template` step, say
//!     attachments: .files                      # [{ filename, content, content_type }]
//! ```
//!
//! `smtp://` upgrades with STARTTLS and refuses a server that does not offer it; `smtps://`
//! (port 465) speaks TLS from the start; `security: none` sends in plain text, for a relay on
//! this machine (with a password, only to `localhost`). `tls:` takes a private CA or a client certificate. Template
//! values are inserted as they are: build HTML with the `template` step, which escapes them.
//! Without `text` or `html`, the body is the message as text (JSON for a structured one). An
//! attachment's `content` is its bytes (`decode_base64!(.pdf)` in a mapping gives them).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use crate::clients::tls::TlsFiles;
use crate::clients::{Resources, Shared};
use crate::config::units::Dur;
use crate::config::{BuildError, Secret};
use crate::core::mapping::{Mapping, Value};
use crate::core::retry::RetryConfig;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SmtpOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `smtp://[user:password@]host[:587]` (STARTTLS) or `smtps://…[:465]` (TLS); a user name
    /// holding `@` writes it `%40`.
    pub url: Secret,
    /// `starttls` (the default for `smtp://`), `tls` (for `smtps://`) or `none` (plain text).
    #[serde(default)]
    pub security: Option<Security>,
    /// A private CA or a client certificate (see `clients/tls.rs`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The sender: `name <address>` or an address.
    pub from: String,
    /// Recipients, comma-separated.
    pub to: String,
    /// Copy recipients, comma-separated.
    #[serde(default)]
    pub cc: Option<String>,
    /// Blind copy recipients, comma-separated: sent to, never named in the headers.
    #[serde(default)]
    pub bcc: Option<String>,
    /// Where replies go, if not to `from`.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML body (with `text`, the two are alternatives of one message).
    #[serde(default)]
    pub html: Option<String>,
    /// A VRL expression giving the attachments: an array of `{ filename, content,
    /// content_type }` (`content_type` defaults to `application/octet-stream`).
    #[serde(default)]
    pub attachments: Option<String>,
    /// Time allowed for one SMTP command. Default 30s.
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain at first, then upgraded with STARTTLS; a server that does not offer it is refused.
    Starttls,
    /// TLS from the start (`smtps://`, port 465).
    Tls,
    /// Plain text all along: for a relay on this machine or network only.
    None,
}

pub struct SmtpOutput {
    /// Made on first use: its connection pool needs the runtime (`weft check` has none).
    transport: std::sync::OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    server: Server,
    /// `smtp://host:port`, for messages (never the credentials).
    shown: String,
    from: Template,
    to: Template,
    cc: Option<Template>,
    bcc: Option<Template>,
    reply_to: Option<Template>,
    subject: Template,
    text: Option<Template>,
    html: Option<Template>,
    attachments: Option<Mapping>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl super::Spec for Config {
    type Built = SmtpOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<SmtpOutput, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut template = |field: &str, source: &str| {
            Template::parse(source, Escape::None)
                .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                .ok()
        };
        let from = template("from", &self.from);
        let to = template("to", &self.to);
        let subject = template("subject", &self.subject);
        let cc = self.cc.as_deref().map(|s| template("cc", s));
        let bcc = self.bcc.as_deref().map(|s| template("bcc", s));
        let reply_to = self.reply_to.as_deref().map(|s| template("reply_to", s));
        let text = self.text.as_deref().map(|s| template("text", s));
        let html = self.html.as_deref().map(|s| template("html", s));
        let attachments = self.attachments.as_deref().map(|s| {
            Mapping::compile(s)
                .map_err(|d| errors.extend(BuildError::from_diagnostics("attachments", d)))
                .ok()
        });
        let server = self.server().map_err(|e| errors.extend(e)).ok();
        // A static sender that is no address is a config error, not a failure per message.
        if let Some(address) = from.as_ref().and_then(Template::as_static)
            && let Err(e) = address.parse::<Mailbox>()
        {
            errors.push(BuildError::new("from", format!("`{address}`: {e}")));
        }
        match (from, to, subject, server) {
            (Some(from), Some(to), Some(subject), Some((server, shown))) if errors.is_empty() => {
                Ok(SmtpOutput {
                    transport: std::sync::OnceLock::new(),
                    server,
                    shown,
                    from,
                    to,
                    subject,
                    cc: cc.flatten(),
                    bcc: bcc.flatten(),
                    reply_to: reply_to.flatten(),
                    text: text.flatten(),
                    html: html.flatten(),
                    attachments: attachments.flatten(),
                })
            }
            _ => Err(errors),
        }
    }
}

/// How to reach the server, checked when the config is built.
struct Server {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl Server {
    /// The pooled transport; it connects on first use.
    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(self.tls.clone())
            .timeout(Some(self.timeout));
        if let Some(credentials) = &self.credentials {
            builder = builder.credentials(credentials.clone());
        }
        builder.build()
    }
}

impl Config {
    /// The server, read from the URL and `tls`, and as shown in messages.
    fn server(&self) -> Result<(Server, String), Vec<BuildError>> {
        let bad = |m: &str| vec![BuildError::new("url", m)];
        let url = url::Url::parse(self.url.expose())
            .ok()
            .filter(|u| matches!(u.scheme(), "smtp" | "smtps"))
            .ok_or_else(|| {
                bad("not a valid smtp:// or smtps:// URL (smtp://[user:password@]host:587)")
            })?;
        let host = url
            .host_str()
            .ok_or_else(|| bad("the URL names no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let security = self.security.unwrap_or(if url.scheme() == "smtps" {
            Security::Tls
        } else {
            Security::Starttls
        });
        if security == Security::None && self.tls.is_some() {
            return Err(vec![BuildError::new(
                "tls",
                "`tls` needs `security: starttls` or `tls`",
            )]);
        }
        if url.scheme() == "smtps" && security != Security::Tls {
            return Err(vec![BuildError::new(
                "security",
                "an smtps:// server speaks TLS from the start; leave `security` out",
            )]);
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if security == Security::None && !url.username().is_empty() && !loopback {
            return Err(vec![BuildError::new(
                "security",
                "`none` would send the password in plain text; only to a relay on this machine (localhost)",
            )]);
        }
        let port = url.port().unwrap_or(match security {
            Security::Tls => 465,
            Security::Starttls | Security::None => 587,
        });
        let tls = match security {
            Security::None => Tls::None,
            Security::Starttls | Security::Tls => {
                let parameters = self.tls_parameters(&host)?;
                if security == Security::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = (!url.username().is_empty()).then(|| {
            Credentials::new(decode(url.username()), decode(url.password().unwrap_or("")))
        });
        let shown = format!("{}://{host}:{port}", url.scheme());
        let server = Server {
            host,
            port,
            tls,
            credentials,
            timeout: self.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.0),
        };
        Ok((server, shown))
    }

    fn tls_parameters(&self, host: &str) -> Result<TlsParameters, Vec<BuildError>> {
        let err = |field: &str, e: lettre::transport::smtp::Error| {
            vec![BuildError::new(field, e.to_string())]
        };
        let files = self.tls.clone().unwrap_or_default();
        // Read and checked here, so a bad file is named at its field.
        let loaded = files.load("tls")?;
        let mut builder = TlsParameters::builder(host.to_string());
        if loaded.roots.is_some() {
            // The CA file's certificates instead of the public roots, as everywhere in weft.
            builder =
                builder.certificate_store(lettre::transport::smtp::client::CertificateStore::None);
        }
        for cert in loaded.roots.into_iter().flatten() {
            let cert = lettre::transport::smtp::client::Certificate::from_der(cert.to_vec())
                .map_err(|e| err("tls.ca_file", e))?;
            builder = builder.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&loaded.pem.cert, &loaded.pem.key) {
            let identity = lettre::transport::smtp::client::Identity::from_pem(cert, key)
                .map_err(|e| err("tls.cert_file", e))?;
            builder = builder.identify_with(identity);
        }
        builder.build_rustls().map_err(|e| err("tls", e))
    }
}

impl SmtpOutput {
    fn fatal(&self, reason: String) -> Attempt {
        Attempt::Fatal {
            reason,
            response: None,
        }
    }

    /// The e-mail for `message`, or why it cannot be made (for good: the same message gives
    /// the same answer).
    fn compose(&self, message: &Message) -> Result<lettre::Message, String> {
        let (value, metadata) = (&message.value, &message.metadata);
        let render = |field: &str, t: &Template| {
            t.render(value, metadata)
                .map_err(|e| format!("{field}: {e}"))
        };
        let mailboxes = |field: &str, t: &Template| -> Result<Vec<Mailbox>, String> {
            let text = render(field, t)?;
            text.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.parse::<Mailbox>()
                        .map_err(|e| format!("{field}: `{a}` is not an e-mail address ({e})"))
                })
                .collect()
        };
        let from = mailboxes("from", &self.from)?
            .into_iter()
            .next()
            .ok_or("from: no address")?;
        let mut builder = lettre::Message::builder()
            .from(from)
            .subject(render("subject", &self.subject)?);
        let to = mailboxes("to", &self.to)?;
        if to.is_empty() {
            return Err("to: no address".into());
        }
        for m in to {
            builder = builder.to(m);
        }
        for (field, list) in [("cc", &self.cc), ("bcc", &self.bcc)] {
            if let Some(t) = list {
                for m in mailboxes(field, t)? {
                    builder = if field == "cc" {
                        builder.cc(m)
                    } else {
                        builder.bcc(m)
                    };
                }
            }
        }
        if let Some(t) = &self.reply_to {
            for m in mailboxes("reply_to", t)? {
                builder = builder.reply_to(m);
            }
        }
        let text = self.text.as_ref().map(|t| render("text", t)).transpose()?;
        let html = self.html.as_ref().map(|t| render("html", t)).transpose()?;
        let body = match (text, html) {
            (Some(text), Some(html)) => MultiPart::alternative_plain_html(text, html),
            (None, Some(html)) => MultiPart::mixed().singlepart(SinglePart::html(html)),
            (Some(text), None) => MultiPart::mixed().singlepart(SinglePart::plain(text)),
            (None, None) => MultiPart::mixed().singlepart(SinglePart::plain(
                String::from_utf8_lossy(&message.body()).into_owned(),
            )),
        };
        let attachments = self.attachments(message)?;
        let email = if attachments.is_empty() {
            builder.multipart(body)
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for a in attachments {
                mixed = mixed.singlepart(a);
            }
            builder.multipart(mixed)
        };
        email.map_err(|e| e.to_string())
    }

    fn attachments(&self, message: &Message) -> Result<Vec<SinglePart>, String> {
        let Some(mapping) = &self.attachments else {
            return Ok(Vec::new());
        };
        let items = match mapping
            .eval(&message.value, &message.metadata)
            .map_err(|e| format!("attachments: {e}"))?
        {
            Value::Array(items) => items,
            Value::Null => return Ok(Vec::new()),
            other => {
                return Err(format!(
                    "attachments must give an array of {{ filename, content, content_type }}, not {}",
                    other.kind_str()
                ));
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = |name: &str| match item {
                    Value::Object(map) => map.get(name),
                    _ => None,
                };
                let text = |v: &Value| match v {
                    Value::Bytes(b) => b.to_vec(),
                    other => crate::core::mapping::to_text(other).into_bytes(),
                };
                let filename = field("filename")
                    .map(|v| String::from_utf8_lossy(&text(v)).into_owned())
                    .ok_or_else(|| format!("attachments[{i}]: no `filename`"))?;
                let content = field("content")
                    .map(text)
                    .ok_or_else(|| format!("attachments[{i}]: no `content`"))?;
                let kind = field("content_type")
                    .map(|v| String::from_utf8_lossy(&text(v)).into_owned())
                    .unwrap_or_else(|| "application/octet-stream".into());
                let kind = ContentType::parse(&kind)
                    .map_err(|_| format!("attachments[{i}]: `{kind}` is not a content type"))?;
                Ok(Attachment::new(filename).body(content, kind))
            })
            .collect()
    }
}

impl crate::core::Output for SmtpOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let email = match self.compose(message) {
            Ok(email) => email,
            Err(reason) => return self.fatal(reason),
        };
        let transport = self.transport.get_or_init(|| self.server.transport());
        match transport.send(email).await {
            Ok(_) => Attempt::Delivered,
            Err(e) => {
                let reason = format!("smtp {}: {e}", self.shown);
                // A refused login is permanent to SMTP, but a password being rotated cures
                // it: retried like an outage, so nothing is given up on meanwhile.
                let login = e
                    .status()
                    .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535"));
                if e.is_permanent() && !login {
                    self.fatal(reason)
                } else {
                    Attempt::Retryable {
                        reason,
                        retry_after: None,
                        response: None,
                    }
                }
            }
        }
    }

    fn reads_metadata(&self) -> bool {
        [&self.from, &self.to, &self.subject]
            .into_iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .chain(&self.reply_to)
            .chain(&self.text)
            .chain(&self.html)
            .any(Template::reads_metadata)
            || self
                .attachments
                .as_ref()
                .is_some_and(Mapping::reads_metadata)
    }
}
