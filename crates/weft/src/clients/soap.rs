//! SOAP over HTTP, shared by the `soap` output and processor. The Body's content is rendered
//! per message from a MiniJinja template (the message's fields are the template's variables, and
//! `message` is the whole message — a field itself called `message` is `message.message`; values
//! are XML-escaped, booleans written `true`/`false`, null as nothing), wrapped in a SOAP 1.1 or 1.2
//! envelope and POSTed with the version's content type and action (`SOAPAction` header for 1.1,
//! the `action` parameter of the content type for 1.2). The answer is parsed as XML (DTDs
//! refused, see `core::xml`) and its Body's content returned as a value. A SOAP Fault fails the
//! call with its code and reason: a `Server` / `Receiver` fault is retried, any other is not.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;

use super::Resources;
use super::call::CallSettings;
use super::http::HttpClient;
use super::request::{Parts, RequestSpec, attempt_of, attempt_of_status, cut_short};
use crate::config::BuildError;
use crate::core::mapping::to_text;
use crate::core::retry::Answer;
use crate::core::{Attempt, Message, Value, xml};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum SoapVersion {
    #[default]
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

/// Declares the config struct of a component that calls SOAP operations: endpoint, version,
/// action and the Body's template, with `auth` and the shared call settings
/// ([`super::call::call_config!`]), plus `fn soap(&self) -> SoapParts<'_>`. The output and the
/// processor each declare theirs, so neither offers a field it refuses.
macro_rules! soap_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {}
        with { $($flag:ident),* $(,)? }
    ) => {
        $crate::clients::call::call_config! {
            $(#[$meta])*
            pub struct $name {
                /// The service's endpoint.
                pub url: String,
                /// `"1.1"` (default) or `"1.2"`.
                #[serde(default)]
                pub version: $crate::clients::soap::SoapVersion,
                /// The operation's action (SOAPAction).
                #[serde(default)]
                pub action: Option<String>,
                /// MiniJinja template of the Body's content.
                pub body: String,
            }
            with { auth, $($flag),* }
        }

        impl $name {
            /// What the call is built from.
            pub fn soap(&self) -> $crate::clients::soap::SoapParts<'_> {
                $crate::clients::soap::SoapParts {
                    url: &self.url,
                    version: self.version,
                    action: self.action.as_deref(),
                    body: &self.body,
                    auth: self.auth.as_deref(),
                    call: self.call(),
                }
            }
        }
    };
}

pub(crate) use soap_config;

/// The configured parts of a SOAP call.
pub struct SoapParts<'a> {
    pub url: &'a str,
    pub version: SoapVersion,
    pub action: Option<&'a str>,
    pub body: &'a str,
    pub auth: Option<&'a str>,
    pub call: CallSettings<'a>,
}

pub struct SoapCall {
    spec: RequestSpec,
    version: SoapVersion,
    templates: minijinja::Environment<'static>,
}

/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

impl SoapCall {
    pub fn build(
        client: &HttpClient,
        resources: &Resources,
        parts: SoapParts<'_>,
    ) -> Result<SoapCall, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut headers = parts.call.headers.clone();
        let action = parts.action.unwrap_or("");
        if action.contains(['"', '\r', '\n']) {
            errors.push(BuildError::new(
                "action",
                "the action cannot hold quotes or line breaks",
            ));
        }
        match parts.version {
            SoapVersion::V11 => {
                headers.insert("Content-Type".into(), "text/xml; charset=utf-8".into());
                headers.insert("SOAPAction".into(), format!("\"{action}\""));
            }
            SoapVersion::V12 => {
                let mut content_type = "application/soap+xml; charset=utf-8".to_string();
                if !action.is_empty() {
                    content_type.push_str(&format!("; action=\"{action}\""));
                }
                headers.insert("Content-Type".into(), content_type);
            }
        }
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: parts.url,
                method: "POST",
                auth: parts.auth,
                call: CallSettings {
                    headers: &headers,
                    ..parts.call
                },
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let mut templates = minijinja::Environment::new();
        templates.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        // XML wants `true`/`false` and nothing for a null (MiniJinja's own `True`/`none` are
        // Python's); everything else is escaped as usual.
        templates.set_formatter(|out, state, value| match value.kind() {
            minijinja::value::ValueKind::Bool => {
                out.write_str(if value.is_true() { "true" } else { "false" })?;
                Ok(())
            }
            minijinja::value::ValueKind::None | minijinja::value::ValueKind::Undefined => Ok(()),
            _ => minijinja::escape_formatter(out, state, value),
        });
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        if let Err(e) = templates.add_template_owned("body", parts.body.to_string()) {
            errors.push(BuildError::new("body", format!("template: {e}")));
        }
        match spec {
            Some(spec) if errors.is_empty() => Ok(SoapCall {
                spec,
                version: parts.version,
                templates,
            }),
            _ => Err(errors),
        }
    }

    pub fn reads_metadata(&self) -> bool {
        self.spec.reads_metadata()
    }

    fn envelope(&self, message: &Message) -> Result<String, String> {
        let mut context = match &message.value {
            Value::Object(fields) => fields
                .iter()
                .map(|(k, v)| (k.to_string(), minijinja::Value::from_serialize(v)))
                .collect::<BTreeMap<_, _>>(),
            _ => BTreeMap::new(),
        };
        context.insert(
            "message".into(),
            minijinja::Value::from_serialize(&message.value),
        );
        let body = self
            .templates
            .get_template("body")
            .and_then(|t| t.render(&context))
            .map_err(|e| format!("body template: {e}"))?;
        let namespace = match self.version {
            SoapVersion::V11 => "http://schemas.xmlsoap.org/soap/envelope/",
            SoapVersion::V12 => "http://www.w3.org/2003/05/soap-envelope",
        };
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<soap:Envelope xmlns:soap=\"{namespace}\"><soap:Body>{body}</soap:Body></soap:Envelope>"
        ))
    }

    /// One call with the message: the Body's content, or how the attempt failed.
    pub async fn call(&self, message: &Message) -> Result<Value, Attempt> {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        let envelope = self.envelope(message).map_err(fatal)?;
        let uri = self
            .spec
            .uri(&message.value, &message.metadata)
            .map_err(fatal)?;
        let shown = self.spec.shown(&uri);
        let response = self
            .spec
            .exchange(
                &uri,
                &Method::POST,
                &message.value,
                &message.metadata,
                Bytes::from(envelope),
                None,
                true,
                MAX_ANSWER,
            )
            .await
            .map_err(|e| attempt_of(e, &Method::POST, &shown))?;
        let status = response.status();
        if let Some(failed) = cut_short(&response, &Method::POST, || shown.clone()) {
            return Err(failed);
        }
        // A one-way operation answers 202 (or 200) with no body at all.
        if status.is_success() && response.body().iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        let parsed = xml::parse(response.body());
        let body = match &parsed {
            Ok(document) => body_of(document),
            Err(_) => None,
        };
        // A SOAP Fault is the Body's only child and carries a code (1.1 `faultcode`, 1.2
        // `Code`); an application element that happens to be called `Fault` is not one.
        if let Some(Value::Object(content)) = &body
            && content.len() == 1
            && let Some(fault @ Value::Object(parts)) = content.get("Fault")
            && (parts.contains_key("faultcode") || parts.contains_key("Code"))
        {
            let (code, reason) = fault_of(fault);
            let excerpt =
                String::from_utf8_lossy(&response.body()[..response.body().len().min(2048)])
                    .into_owned();
            let text = format!("POST {shown}: SOAP Fault {code}: {reason}");
            let answer = Some(Answer {
                status: status.as_u16(),
                excerpt,
            });
            // `soap:Server`, and 1.1's dotted refinements such as `soap:Server.Timeout`.
            let local = code.rsplit(':').next().unwrap_or(&code);
            let transient = ["Server", "Receiver"]
                .iter()
                .any(|c| local == *c || local.starts_with(&format!("{c}.")));
            return Err(if transient {
                Attempt::Retryable {
                    reason: text,
                    retry_after: None,
                    response: answer,
                }
            } else {
                Attempt::Fatal {
                    reason: text,
                    response: answer,
                }
            });
        }
        if !status.is_success() {
            return Err(attempt_of_status(&response, &Method::POST, &shown));
        }
        match (parsed, body) {
            (Err(e), _) => Err(fatal(format!("POST {shown}: {e}"))),
            (Ok(_), None) => Err(fatal(format!("POST {shown}: the answer has no SOAP Body"))),
            (Ok(_), Some(body)) => Ok(body),
        }
    }
}

/// The content of `Envelope/Body`.
fn body_of(document: &Value) -> Option<Value> {
    let Value::Object(root) = document else {
        return None;
    };
    let Some(Value::Object(envelope)) = root.get("Envelope") else {
        return None;
    };
    envelope.get("Body").cloned()
}

/// Code and reason of a 1.1 (`faultcode`, `faultstring`) or 1.2 (`Code/Value`, `Reason/Text`)
/// fault.
fn fault_of(fault: &Value) -> (String, String) {
    let Value::Object(f) = fault else {
        return ("?".into(), to_text(fault));
    };
    let text_of = |v: Option<&Value>| -> String {
        match v {
            Some(Value::Object(o)) => o.get("#text").map(to_text).unwrap_or_default(),
            Some(Value::Array(items)) => items.first().map(to_text).unwrap_or_default(),
            Some(other) => to_text(other),
            None => String::new(),
        }
    };
    if f.contains_key("faultcode") {
        return (text_of(f.get("faultcode")), text_of(f.get("faultstring")));
    }
    // 1.2 codes nest: `Sender`, then the application's own `Subcode`s.
    let mut code = String::new();
    let mut level = f.get("Code");
    while let Some(Value::Object(c)) = level {
        if !code.is_empty() {
            code.push('/');
        }
        code.push_str(&text_of(c.get("Value")));
        level = c.get("Subcode");
    }
    if code.is_empty() {
        code = text_of(f.get("Code"));
    }
    let reason = match f.get("Reason") {
        Some(Value::Object(r)) => match r.get("Text") {
            Some(Value::Array(texts)) => text_of(texts.first()),
            t => text_of(t),
        },
        other => text_of(other),
    };
    (code, reason)
}
