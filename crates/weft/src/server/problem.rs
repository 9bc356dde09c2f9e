//! Failure answers as `application/problem+json` (RFC 9457), of `http_server` and of the server
//! loop itself.
//!
//! Every refusal and failure `http_server` answers has a stable `type`
//! (`urn:weft:problem:<kind>`, listed with their statuses in `http_server`'s page,
//! `docs/components/inputs/http_server.md`), a `title` that names the kind, the
//! `status`, and where there is one the message `id`. `detail` says what the caller can act on:
//! what was wrong with its own request (a body that does not parse, a failed `assert`'s own
//! message). What happened beyond weft (an upstream's URL, its answer, a step's path) is logged
//! and kept with the dead letter, and reaches the caller only where the endpoint says
//! `errors: detailed`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::core::Fault;

/// One problem answer, built up and then turned into a response.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: Option<String>,
    id: Option<String>,
    component: Option<String>,
    retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: None,
            id: None,
            component: None,
            retry_after: None,
        }
    }

    /// What the caller can act on.
    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    /// The message the problem is about.
    pub fn id(mut self, id: &str) -> Problem {
        self.id = Some(id.into());
        self
    }

    /// The step or output that failed (`errors: detailed` only).
    pub fn component(mut self, component: &str) -> Problem {
        self.component = Some(component.into());
        self
    }

    /// `Retry-After`, in whole seconds (at least one).
    pub fn retry_after(mut self, wait: Duration) -> Problem {
        self.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// The answer to a message that failed in the flow: the status its kind of failure calls
    /// for. `detailed` adds the full reason and the failing component.
    pub fn failed(fault: Fault, reason: &str, component: &str, detailed: bool) -> Problem {
        let problem = match fault {
            // The caller's own message: it reads what was wrong (an `assert`'s message).
            Fault::Invalid => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-message",
                "The message was refused by the flow",
            )
            .detail(reason),
            Fault::Upstream => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-failed",
                "A system the flow calls refused or failed the message",
            ),
            Fault::Unavailable { retry_after } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream-unavailable",
                "A system the flow calls is unavailable; retry later",
            )
            .retry_after(retry_after.unwrap_or(Duration::from_secs(1))),
        };
        if detailed {
            problem.detail(reason).component(component)
        } else {
            problem
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": format!("urn:weft:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let Some(detail) = self.detail {
            body["detail"] = crate::config::secret::redact(&detail).into();
        }
        if let Some(id) = self.id {
            body["id"] = id.into();
        }
        if let Some(component) = self.component {
            body["component"] = component.into();
        }
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
