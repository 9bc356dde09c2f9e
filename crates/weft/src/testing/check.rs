//! What a test expects, checked against what happened: the answer to a request, the messages
//! each output accepted, the dead letters; VRL conditions and JSON inclusion.

use super::*;

/// Checks a durable flow's dead letters; without `expect`, there must be none.
pub(super) async fn check_dead_letters(
    store: &weft_store::Store,
    flow: &str,
    expect: Option<&DlqExpect>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let filter = weft_store::DlqFilter {
        flow: Some(flow.to_string()),
        ..Default::default()
    };
    let dead = match store.dead_letters(&filter, 10_000).await {
        Ok(dead) => dead,
        Err(e) => return vec![format!("dlq: cannot read the store: {e}")],
    };
    let count = match expect {
        None => Some(0),
        Some(expect) => expect
            .count
            .or((!expect.entries.is_empty()).then_some(expect.entries.len())),
    };
    if let Some(count) = count
        && count != dead.len()
    {
        errors.push(format!(
            "dlq: expected {count} dead letter(s), got {}{}",
            dead.len(),
            dead.iter()
                .map(|d| format!("\n{}", d.failure.reason))
                .collect::<String>()
        ));
    }
    for (i, check) in expect.iter().flat_map(|e| e.entries.iter()).enumerate() {
        let what = format!("dlq entry {i}");
        let Some(dead) = dead.get(i) else {
            errors.push(format!("{what}: there is none"));
            continue;
        };
        let value = durable::decode_value(&dead.payload).unwrap_or_else(Value::from);
        let mut metadata = to_value(crate::admin::dlq::bytes_as_json(&dead.metadata));
        if !matches!(metadata, Value::Object(_)) {
            metadata = crate::core::mapping::empty_object();
        }
        crate::core::mapping::insert(
            &mut metadata,
            "dlq",
            to_value(serde_json::json!({
                "reason": dead.failure.reason,
                "attempts": dead.attempts,
                "last_status": dead.failure.last_status,
            })),
        );
        let dead_letter = Some((dead.failure.reason.as_str(), dead.attempts));
        errors.extend(check_message(&what, check, &value, &metadata, dead_letter));
    }
    errors
}

pub(super) fn shown_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn send(
    client: &HttpClient,
    address: std::net::SocketAddr,
    default_path: &str,
    request: &TestRequest,
    auth: Option<&crate::inputs::http_server::auth::Auth>,
) -> Result<(u16, http::HeaderMap, Bytes), String> {
    let path = request.path.as_deref().unwrap_or(default_path);
    if request.path.is_none() && path.contains('{') {
        return Err(format!(
            "the endpoint's path `{path}` has parameters: give `path`"
        ));
    }
    let method = http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|e| format!("method: {e}"))?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header `{name}`: {e}"))?;
        let value =
            http::HeaderValue::from_str(value).map_err(|e| format!("header `{name}`: {e}"))?;
        headers.append(name, value);
    }
    let body = match &request.body {
        None => Bytes::new(),
        Some(Json::String(s)) => Bytes::from(s.clone()),
        Some(other) => {
            if !headers.contains_key(http::header::CONTENT_TYPE) {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
            }
            Bytes::from(other.to_string())
        }
    };
    let secret = match &request.sign {
        Sign::Yes(false) => None,
        Sign::Yes(true) => Some(None),
        Sign::With { secret } => Some(Some(secret.as_str())),
    };
    if let Some(secret) = secret {
        let auth = auth.ok_or("`sign`, but the endpoint has no `auth` to sign for")?;
        auth.sign_as_sender(&mut headers, &body, chrono::Utc::now().timestamp(), secret)
            .map_err(|e| format!("sign: {e}"))?;
    }
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    if let Some(all) = builder.headers_mut() {
        *all = headers;
    }
    let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = client
        .send(request, Duration::from_secs(30), 16 << 20)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok((status, parts.headers, body))
}

pub(super) fn check_response(
    what: &str,
    expect: &ResponseExpect,
    status: u16,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Vec<String> {
    let mut errors = Vec::new();
    let text = String::from_utf8_lossy(body);
    let json = crate::admin::dlq::bytes_as_json(body);
    match expect.status {
        Some(want) if want != status => errors.push(format!(
            "{what}: expected status {want}, got {status}: {text}"
        )),
        None if !(200..300).contains(&status) => errors.push(format!(
            "{what}: expected a 2xx status, got {status}: {text}"
        )),
        _ => {}
    }
    if let Some(want) = &expect.body
        && !same(want, &json)
    {
        errors.push(format!(
            "{what}: expected the body\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &expect.includes
        && !includes(want, &json)
    {
        errors.push(format!(
            "{what}: the body does not include\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(condition) = &expect.condition {
        let header_map: serde_json::Map<String, Json> = headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), Json::String(v.to_str().ok()?.to_string()))))
            .collect();
        let metadata = to_value(serde_json::json!({ "status": status, "headers": header_map }));
        if let Some(e) = holds(condition, &to_value(json.clone()), &metadata) {
            errors.push(format!("{what}: {e}; the body was\n{}", pretty(&json)));
        }
    }
    errors
}

pub(super) fn check_message(
    what: &str,
    check: &Check,
    value: &Value,
    metadata: &Value,
    dead: Option<(&str, u32)>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let json = to_json(value);
    if let Some(want) = &check.value
        && !same(want, &json)
    {
        errors.push(format!(
            "{what}: expected\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &check.includes
        && !includes(want, &json)
    {
        errors.push(format!(
            "{what}: does not include\n{}\ngot\n{}",
            pretty(want),
            pretty(&json)
        ));
    }
    if let Some(want) = &check.metadata {
        let got = to_json(metadata);
        if !includes(want, &got) {
            errors.push(format!(
                "{what}: the metadata does not include\n{}\ngot\n{}",
                pretty(want),
                pretty(&got)
            ));
        }
    }
    if let Some(condition) = &check.condition
        && let Some(e) = holds(condition, value, metadata)
    {
        errors.push(format!("{what}: {e}; the message was\n{}", pretty(&json)));
    }
    match (dead, &check.reason, check.attempts) {
        (None, Some(_), _) | (None, _, Some(_)) => {
            errors.push(format!(
                "{what}: `reason` and `attempts` are checks of dead letters (`dlq.entries`)"
            ));
        }
        (Some((reason, attempts)), want_reason, want_attempts) => {
            if let Some(want) = want_reason
                && !reason.contains(want.as_str())
            {
                errors.push(format!(
                    "{what}: the reason does not contain `{want}`: {reason}"
                ));
            }
            if let Some(want) = want_attempts
                && want != attempts
            {
                errors.push(format!(
                    "{what}: expected {want} attempt(s), got {attempts}"
                ));
            }
        }
        _ => {}
    }
    errors
}

/// `None` when `condition` holds for the message, else why not.
pub(super) fn holds(condition: &str, value: &Value, metadata: &Value) -> Option<String> {
    let mapping = match Mapping::compile(condition) {
        Ok(m) => m,
        Err(diagnostics) => {
            return Some(format!(
                "the condition `{condition}` does not compile: {}",
                joined(&diagnostics)
            ));
        }
    };
    match mapping.eval(value, metadata) {
        Ok(Value::Boolean(true)) => None,
        Ok(other) => Some(format!(
            "the condition `{condition}` gave {}",
            to_json(&other)
        )),
        Err(e) => Some(format!("the condition `{condition}` failed: {e}")),
    }
}

/// Whether `got` has everything `want` has: objects key by key (more keys allowed), arrays
/// element by element (same length), numbers by value (1 and 1.0 are equal).
pub(super) fn includes(want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| includes(v, gv))),
        (Json::Array(w), Json::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| includes(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == got,
    }
}

/// Whether two values are equal, numbers compared by value (1 and 1.0 are equal).
pub(super) fn same(want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| same(v, gv)))
        }
        (Json::Array(w), Json::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| same(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == got,
    }
}

pub(super) fn to_value(json: Json) -> Value {
    serde_json::from_value(json).unwrap_or(Value::Null)
}

pub(super) fn to_json(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

pub(super) fn pretty(json: &Json) -> String {
    serde_json::to_string_pretty(json).unwrap_or_default()
}
