//! A configured secret (a password, a client secret, a token): its value is only reachable
//! through [`Secret::expose`], and it prints as `[redacted]` in `Debug` and `Display`, so a
//! config dump, an error or a log line never carries it.
//!
//! Secrets inside URLs are plain text to the components that use them, so they are caught where
//! text leaves weft instead: while the config is read, [`learn_url`] notes every URL's password
//! and each query value that came from a `${VAR}` or `${file:}`; [`redact_url`] writes a URL
//! without them (every URL weft prints goes through it) and [`redact`] takes them out of any
//! text (every log line, failure reason and dead letter goes through it).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that tells nothing about either: both are
    /// hashed first, so not even the length shows.
    pub fn matches(&self, given: &[u8]) -> bool {
        let (a, b) = (
            ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes()),
            ring::digest::digest(&ring::digest::SHA256, given),
        );
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        note_secret(&value);
        Ok(Secret::new(value))
    }
}

/// The values of the config's secret fields: [`shown`] hides them wherever they stand.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn note_secret(value: &str) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !value.is_empty() && !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
    }
}

/// Whether a setting named `key` holds a credential whatever its type: a password, a token,
/// an API key, an `Authorization` header (`token_url` does not: the name must end so).
pub fn is_sensitive_key(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // A name ending in `key` holds one (`X-Auth-Key`, `signing_key`), except these, which
    // name a message's field or a place: hiding a setting is harmless, showing a secret not.
    const NOT_SECRET_KEYS: &[&str] = &[
        "key",
        "bykey",
        "routingkey",
        "checkpointkey",
        "partitionkey",
        "cachekey",
        "groupkey",
        "orderkey",
        "primarykey",
    ];
    [
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "secret",
        "token",
        "authorization",
        "credentials",
        "cookie",
        "bearer",
        "signature",
    ]
    .iter()
    .any(|word| key.ends_with(word))
        || (key.ends_with("key") && !NOT_SECRET_KEYS.contains(&key.as_str()))
}

/// A config value as the dashboard shows it: `[redacted]` when its setting is named like a
/// credential or it is a secret field's value; else without any secret field's value inside
/// it (one of at least [`MIN_FREE_TEXT`] bytes: a VRL program, a header built around a token)
/// nor the credentials [`redact`] knows.
pub fn shown<'a>(key: Option<&str>, value: &'a str) -> Cow<'a, str> {
    if key.is_some_and(is_sensitive_key) {
        return Cow::Borrowed(REDACTED);
    }
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().any(|s| s == value) {
        return Cow::Borrowed(REDACTED);
    }
    let mut text = Cow::Borrowed(value);
    for secret in secrets.iter().filter(|s| s.len() >= MIN_FREE_TEXT) {
        if text.contains(secret.as_str()) {
            text = Cow::Owned(text.replace(secret.as_str(), REDACTED));
        }
    }
    drop(secrets);
    if text.contains("://") {
        Cow::Owned(redact_url(&text))
    } else {
        match redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(hidden) => Cow::Owned(hidden),
        }
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret; write it as `${VAR}` or `${file:/path}` rather than in the file.",
            "writeOnly": true
        })
    }
}

/// What [`redact`] takes out of text: URL passwords and secret-sourced query values, longest
/// first, as written and percent-decoded.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shorter ones (`1000`, `guest`): taken out of a URL where they stand as a whole password or
/// query value, but not out of free text, where they would blank out ordinary words.
static SHORT: RwLock<Vec<String>> = RwLock::new(Vec::new());

const MIN_FREE_TEXT: usize = 6;

const REDACTED: &str = "[redacted]";

/// Keeps a credential that came from elsewhere than the config (an `AWS_…` variable) out of
/// every text weft shows, as if it were a secret field's value.
pub fn learn_secret(value: &str) {
    note_secret(value);
    remember(value);
}

fn remember(value: &str) {
    if value.is_empty() {
        return;
    }
    for value in [Cow::Borrowed(value), decoded(value)] {
        let list = if value.len() >= MIN_FREE_TEXT {
            &KNOWN
        } else {
            &SHORT
        };
        let mut list = list.write().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|k| *k == *value) {
            list.push(value.into_owned());
            list.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
    }
}

fn decoded(value: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy()
}

/// The parts of a URL that may hold a credential: its userinfo, its path (Slack's and
/// Discord's webhook URLs carry their secret there) and its query's `(key, value)` pairs, as
/// byte ranges of the text.
struct Parts {
    userinfo: Option<std::ops::Range<usize>>,
    path: std::ops::Range<usize>,
    values: Vec<std::ops::Range<usize>>,
}

fn parts(url: &str) -> Option<Parts> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = start + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let userinfo = url[start..end].rfind('@').map(|at| start..start + at);
    let path = end..end + url[end..].find(['?', '#']).unwrap_or(url.len() - end);
    let mut values = Vec::new();
    if let Some(q) = url[end..].find('?') {
        let q = end + q + 1;
        let q_end = q + url[q..].find('#').unwrap_or(url.len() - q);
        let mut at = q;
        for pair in url[q..q_end].split('&') {
            if let Some(eq) = pair.find('=') {
                values.push(at + eq + 1..at + pair.len());
            }
            at += pair.len() + 1;
        }
    }
    Some(Parts {
        userinfo,
        path,
        values,
    })
}

/// Notes the credentials in a configured URL (or several, comma-separated, as NATS takes them):
/// each password, a userinfo without one (a token) when `${…}` put it there, and the query
/// values `${…}` put there (`sourced`: what it put into the text), wholly or in part.
pub fn learn_url(url: &str, sourced: &[String]) {
    // `text` holds what `${…}` put in, or came whole from a `${…}` holding `context` (the
    // userinfo with its `@`, the query pair with its key).
    let from_source = |text: &str, context: &str| {
        !text.is_empty()
            && sourced
                .iter()
                .filter(|s| !s.is_empty())
                .any(|s| text.contains(s.as_str()) || s.contains(context))
    };
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    for (i, server) in url.split(',').enumerate() {
        let server = if i > 0 && !server.contains("://") {
            Cow::Owned(format!("{scheme}://{server}"))
        } else {
            Cow::Borrowed(server)
        };
        let Some(parts) = parts(&server) else {
            continue;
        };
        if let Some(userinfo) = parts.userinfo {
            let with_at = &server[userinfo.start..userinfo.end + 1];
            let userinfo = &server[userinfo];
            match userinfo.split_once(':') {
                Some((_, password)) => remember(password),
                None if from_source(userinfo, with_at) => remember(userinfo),
                None => {}
            }
        }
        // A path segment that came wholly from `${…}` and reads as a token, not a word or a
        // number: the last part of `https://hooks.slack.com/services/T…/B…/<secret>`.
        for segment in server[parts.path].split('/') {
            if looks_like_token(segment) && sourced.iter().any(|s| s.contains(segment)) {
                remember(segment);
            }
        }
        for range in parts.values {
            let pair_start = server[..range.start]
                .rfind(['?', '&'])
                .map_or(range.start, |at| at + 1);
            let pair = &server[pair_start..range.end];
            let value = &server[range];
            if from_source(value, pair) || from_source(&decoded(value), pair) {
                remember(value);
                for source in sourced.iter().filter(|s| value.contains(s.as_str())) {
                    remember(source);
                }
            }
        }
    }
}

/// At least 16 characters of letters and digits (`-`, `_` and `.` too), mixing letters with
/// digits or with both cases: a generated token rather than a path's word or number. A UUID
/// reads as one too (some hook URLs are nothing but one); hiding an id that was no secret
/// costs only a `[redacted]` in what is shown.
fn looks_like_token(segment: &str) -> bool {
    let has = |f: fn(&u8) -> bool| segment.as_bytes().iter().any(f);
    segment.len() >= 16
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && has(u8::is_ascii_alphabetic)
        && (has(u8::is_ascii_digit) || (has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)))
}

/// `text` without any credential [`learn_url`] noted.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    if known.is_empty() || !known.iter().any(|k| text.contains(k.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

/// A URL as weft prints it: no password (a userinfo keeps its user name), no query value that
/// holds a noted credential, and nothing else [`redact`] knows.
pub fn redact_url(url: &str) -> String {
    let Some(parts) = parts(url) else {
        return redact(url).into_owned();
    };
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let short = SHORT.read().unwrap_or_else(|e| e.into_inner());
    let secret = |value: &str| {
        let plain = decoded(value);
        known
            .iter()
            .any(|k| value.contains(k.as_str()) || plain.contains(k.as_str()))
            || short.iter().any(|k| *k == value || *k == plain)
    };
    let mut cut: Vec<std::ops::Range<usize>> = Vec::new();
    if let Some(userinfo) = parts.userinfo {
        match url[userinfo.clone()].find(':') {
            Some(colon) => cut.push(userinfo.start + colon + 1..userinfo.end),
            None if secret(&url[userinfo.clone()]) => cut.push(userinfo),
            None => {}
        }
    }
    for range in parts.values {
        if secret(&url[range.clone()]) {
            cut.push(range);
        }
    }
    drop((known, short));
    let mut out = String::with_capacity(url.len());
    let mut at = 0;
    for range in cut {
        out.push_str(&url[at..range.start]);
        out.push_str(REDACTED);
        at = range.end;
    }
    out.push_str(&url[at..]);
    redact(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_shows_redacted_by_its_name_or_as_a_secret_fields_value() {
        let secret: Secret = serde_json::from_value(serde_json::json!("s3cr3t-v4lue")).unwrap();
        assert_eq!(secret.expose(), "s3cr3t-v4lue");
        assert_eq!(shown(Some("note"), "s3cr3t-v4lue"), REDACTED);
        assert_eq!(shown(Some("client_secret"), "abc"), REDACTED);
        assert_eq!(shown(Some("X-Api-Key"), "abc"), REDACTED);
        assert_eq!(shown(Some("Authorization"), "Bearer abc"), REDACTED);
        assert_eq!(
            shown(Some("token_url"), "https://id.example.com/token"),
            "https://id.example.com/token"
        );
        assert_eq!(shown(Some("key"), ".order_id"), ".order_id");
        assert_eq!(shown(None, "orders"), "orders");
        // Inside a longer value too (a program, a header under another name).
        assert_eq!(
            shown(Some("map"), ".auth = \"s3cr3t-v4lue\""),
            ".auth = \"[redacted]\""
        );
        assert_eq!(shown(Some("Ocp-Apim-Subscription-Key"), "abc"), REDACTED);
        assert_eq!(shown(Some("signing_key"), "abc"), REDACTED);
        assert_eq!(shown(Some("routing_key"), "orders"), "orders");
    }

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn credentials_in_urls_are_learnt_and_taken_out_of_text() {
        let sourced = vec!["q-9f8e7d6c".to_string(), "api.example.com".to_string()];
        learn_url(
            "https://bot:pw%2F1234@api.example.com/orders?page=2&key=q-9f8e7d6c#top",
            &sourced,
        );
        // Where a URL is printed: the password and the sourced value, by position.
        assert_eq!(
            redact_url("https://bot:pw%2F1234@api.example.com/orders?page=2&key=q-9f8e7d6c#top"),
            "https://bot:[redacted]@api.example.com/orders?page=2&key=[redacted]#top"
        );
        // A userinfo without a password is a token when `${…}` put it there; a plain user name
        // (`postgres://postgres@db`) is not.
        learn_url(
            "https://tok-from-env@example.org/",
            &["tok-from-env".into()],
        );
        assert_eq!(
            redact_url("https://tok-from-env@example.org/"),
            "https://[redacted]@example.org/"
        );
        learn_url("postgres://postgres@db/x", &[]);
        assert_eq!(
            redact("postgres://postgres@db/x"),
            "postgres://postgres@db/x"
        );
        // A whole URL from `${…}`: its query values are sourced; a short one is cut where it
        // stands, but left in free text.
        learn_url(
            "https://api.test/v1?limit=1000&api_key=k3y-s0urced",
            &["https://api.test/v1?limit=1000&api_key=k3y-s0urced".into()],
        );
        assert_eq!(
            redact_url("https://api.test/v1?limit=1000&api_key=k3y-s0urced"),
            "https://api.test/v1?limit=[redacted]&api_key=[redacted]"
        );
        assert_eq!(redact("took 1000 ms"), "took 1000 ms");
        // A webhook URL with its secret in the path (Slack, Discord), from `${…}`: the token
        // segment goes, its ids and words stay.
        let slack = "https://hooks.slack.com/services/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";
        learn_url(slack, &[slack.into()]);
        assert_eq!(
            redact(&format!("POST {slack}: 404 no_service")),
            "POST https://hooks.slack.com/services/T0A1B2C3D/B0E4F5G6H/[redacted]: 404 no_service"
        );
        // A token without a digit (one Slack token in about seventy) goes too.
        let slack = "https://hooks.slack.com/services/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";
        learn_url(slack, &[slack.into()]);
        assert!(redact(slack).ends_with("/B0E4F5G6H/[redacted]"));
        // A segment written in the config that merely contains a short `${…}` value stays.
        learn_url("https://api.test/reports-2024-quarterly2/x", &["2".into()]);
        assert_eq!(
            redact("https://api.test/reports-2024-quarterly2/x"),
            "https://api.test/reports-2024-quarterly2/x"
        );
        // A path written in the config is left alone, however it looks.
        learn_url(
            "https://api.test/v2/orders/0123456789abcdef0123",
            &["https://api.test".into()],
        );
        assert_eq!(
            redact("https://api.test/v2/orders/0123456789abcdef0123"),
            "https://api.test/v2/orders/0123456789abcdef0123"
        );
        // Several NATS servers, each with its password.
        learn_url("nats://u:pw-one-111@h1:4222,u:pw-two-222@h2:4222", &[]);
        assert_eq!(redact("pw-one-111 pw-two-222"), "[redacted] [redacted]");
        // In any text: as written and decoded; the host, also from `${…}`, stays.
        assert_eq!(
            redact("POST failed: pw/1234 and pw%2F1234 and q-9f8e7d6c at api.example.com"),
            "POST failed: [redacted] and [redacted] and [redacted] at api.example.com"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
