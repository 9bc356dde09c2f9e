//! The config as `weft run` runs it, for the admin API and the dashboard: its files, how the
//! last reload went (every error with `file:line:col`), a reload on demand (the same path as
//! SIGHUP), and a check of any YAML that applies nothing.
//!
//! ```text
//! GET  /api/v1/config          the files and the last reload
//! POST /api/v1/config/reload   load the files again; GET tells how it went
//! POST /api/v1/config/check    body: YAML; its errors, or the flows it defines
//! ```

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use tokio::sync::Notify;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, json_response};

/// Largest YAML a check reads.
pub const CHECK_MAX: usize = 1024 * 1024;

/// Shared by `weft run`'s config watcher, which fills it, and the API, which shows it.
#[derive(Clone, Default)]
pub struct ConfigState {
    status: Arc<Mutex<ConfigStatus>>,
    reload: Arc<Notify>,
}

/// The files and the last reload.
#[derive(Clone, Default, Serialize, ToSchema)]
pub struct ConfigStatus {
    /// The config files, as given to `weft run`.
    pub files: Vec<String>,
    /// The last reload since weft started; none before the first.
    pub last_reload: Option<Reload>,
}

/// How a reload went.
#[derive(Clone, Serialize, ToSchema)]
pub struct Reload {
    /// When it ended (RFC 3339).
    pub at: String,
    /// What asked for it: `a config file changed`, `SIGHUP` or `the admin API`.
    pub trigger: String,
    /// Whether the new config was valid and went to the engine, which restarts the flows that
    /// changed (a flow that then cannot start is logged, and its old one goes on); when not,
    /// every flow goes on as it was.
    pub applied: bool,
    /// Why not: each error with `file:line:col`.
    pub errors: Vec<String>,
}

/// What a check found.
#[derive(Serialize, ToSchema)]
pub struct Checked {
    pub valid: bool,
    /// Each error with `line:col` in the text checked (named `check.yaml`).
    pub errors: Vec<String>,
    /// The flows it defines, when valid.
    pub flows: Vec<String>,
}

impl ConfigState {
    pub fn set_files(&self, files: Vec<String>) {
        self.lock().files = files;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps how a reload went.
    pub fn record(&self, trigger: &str, outcome: Result<(), Vec<String>>) {
        let (applied, errors) = match outcome {
            Ok(()) => (true, Vec::new()),
            Err(errors) => (false, errors),
        };
        self.lock().last_reload = Some(Reload {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            trigger: trigger.to_string(),
            applied,
            errors,
        });
    }

    pub fn status(&self) -> ConfigStatus {
        self.lock().clone()
    }

    /// Waits until the API asks for a reload.
    pub async fn reload_requested(&self) {
        self.reload.notified().await;
    }
}

/// `${VAR}` from the environment, remembering the values it gave out, so that what is said
/// about the config afterwards (its errors) can hide them: an error may quote a value.
#[derive(Default)]
pub struct EnvLookup {
    given: Mutex<Vec<String>>,
}

impl EnvLookup {
    pub fn get(&self, name: &str) -> Option<String> {
        let value = std::env::var(name).ok();
        if let Some(v) = &value {
            self.given
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(v.clone());
        }
        value
    }

    /// `text` with every value given out (of three bytes or more), and every credential weft
    /// knows of ([`crate::config::secret::redact`]), as `[redacted]`.
    pub fn hide(&self, mut text: String) -> String {
        let given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        for value in given.iter().filter(|v| v.len() >= 3) {
            text = text.replace(value.as_str(), "[redacted]");
        }
        crate::config::secret::redact(&text).into_owned()
    }
}

/// Checks `text` as a config file, with `${VAR}` from the environment as `weft check` does; a
/// variable's value never shows in what comes back.
pub fn check(text: &str) -> Checked {
    let env = EnvLookup::default();
    let loaded = crate::load::load_str(
        "check.yaml",
        text,
        &|name: &str| env.get(name),
        &crate::clients::Shared::default(),
    );
    let hide = |text: String| env.hide(text);
    match loaded {
        Ok(loaded) => Checked {
            valid: true,
            errors: Vec::new(),
            flows: loaded.flows.iter().map(|f| f.name.clone()).collect(),
        },
        Err(errors) => Checked {
            valid: false,
            errors: errors.iter().map(|e| hide(e.to_string())).collect(),
            flows: Vec::new(),
        },
    }
}

pub(super) fn routes(state: Option<ConfigState>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(reload))
        .routes(routes!(check_text))
        .with_state(state)
}

fn not_from_files() -> ApiError {
    ApiError::NotFound("this weft was not started from config files (`weft run FILE`)".into())
}

/// The config files and how the last reload went.
#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    responses((status = 200, body = ConfigStatus), (status = 404, body = super::ErrorBody)))]
async fn status(State(state): State<Option<ConfigState>>) -> Result<Response, ApiError> {
    let state = state.ok_or_else(not_from_files)?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(state.status()).unwrap_or_default(),
    ))
}

/// Loads the config files again, as SIGHUP does: a valid config replaces the flows that
/// changed, an invalid one is refused while the flows go on. Answers at once; `GET
/// /api/v1/config` tells how it went.
#[utoipa::path(post, path = "/api/v1/config/reload", tag = "config",
    responses((status = 202, description = "The reload is under way"), (status = 404, body = super::ErrorBody)))]
async fn reload(State(state): State<Option<ConfigState>>) -> Result<Response, ApiError> {
    let state = state.ok_or_else(not_from_files)?;
    state.reload.notify_one();
    Ok(json_response(
        StatusCode::ACCEPTED,
        serde_json::json!({ "reloading": true }),
    ))
}

/// Checks a config (the YAML of one file, as the body) without applying anything: its errors
/// with `line:col`, or the flows it defines.
#[utoipa::path(post, path = "/api/v1/config/check", tag = "config",
    request_body(content = Option<String>, description = "A config file's YAML, as text (any content type is read as such); none is an empty config", content_type = "text/plain"),
    responses((status = 200, body = Checked), (status = 400, body = super::ErrorBody)))]
async fn check_text(body: axum::body::Bytes) -> Result<Response, ApiError> {
    if body.len() > CHECK_MAX {
        return Err(ApiError::BadRequest(format!(
            "a config to check is at most {} KiB",
            CHECK_MAX / 1024
        )));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the config is not UTF-8 text".into()))?;
    let checked = tokio::task::spawn_blocking(move || check(&text))
        .await
        .map_err(|e| ApiError::BadRequest(format!("the check failed: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(checked).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_says_where_a_config_is_wrong_and_never_a_variables_value() {
        let ok = check("flows:\n  a:\n    input: { stdin: {} }\n    output: { drop: {} }\n");
        assert!(ok.valid, "{:?}", ok.errors);
        assert_eq!(ok.flows, ["a"]);
        let bad = check("flows:\n  a:\n    input: { stdin: {} }\n    output: { dropp: {} }\n");
        assert!(!bad.valid);
        assert!(
            bad.errors[0].starts_with("check.yaml:4:"),
            "{:?}",
            bad.errors
        );
        // A variable's value that an error would quote is hidden (`HOME` is always set).
        let home = std::env::var("HOME").unwrap();
        let leaky = check(
            "flows:\n  a:\n    input: { http_server: { address: \"${HOME}\" } }\n    output: { drop: {} }\n",
        );
        assert!(!leaky.valid);
        let text = leaky.errors.join("\n");
        assert!(
            text.contains("[redacted]") && !text.contains(&home),
            "{text}"
        );
    }
}
