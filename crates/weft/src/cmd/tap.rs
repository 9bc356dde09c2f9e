//! `weft tap`: follows a running flow's tap (server-sent events from the admin endpoint) and
//! prints each message as a line.

use anyhow::Context;

#[derive(clap::Args)]
pub struct Tap {
    flow: String,
    /// The stage to listen to; every stage when left out.
    #[arg(long)]
    stage: Option<String>,
    /// The share of messages shown, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    sample: f64,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// The admin endpoint: `ip:port` (plain HTTP) or a URL.
    #[arg(long, env = "WEFT_ADMIN_ADDRESS", default_value = weft::admin::DEFAULT_ADDRESS)]
    admin: String,
    /// Bearer token of the admin endpoint.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl Tap {
    /// Reads the server-sent events of the tap and prints each one's data as a line.
    pub async fn run(self) -> anyhow::Result<()> {
        use http_body_util::BodyExt;
        let base = if self.admin.contains("://") {
            self.admin.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", self.admin)
        };
        let mut query = vec![
            ("sample".to_string(), self.sample.to_string()),
            ("limit".to_string(), self.limit.to_string()),
        ];
        if let Some(stage) = &self.stage {
            query.push(("stage".into(), stage.clone()));
        }
        let query: String = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{base}/api/v1/flows/{}/tap?{query}", percent(&self.flow));
        let mut request =
            http::Request::get(&url).header(http::header::ACCEPT, "text/event-stream");
        if let Some(token) = self.admin_token.filter(|t| !t.is_empty()) {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .with_context(|| format!("bad admin address `{}`", self.admin))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let response = client.request(request).await.with_context(|| {
            format!("cannot reach the admin endpoint at {base} (is weft running?)")
        })?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let reason = serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
            anyhow::bail!("{status}: {reason}");
        }
        // Events are `data:` lines ending at an empty line; keep-alive comments start with `:`.
        let mut pending = Vec::new();
        let mut printed = 0;
        let mut out = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.trim_end_matches(['\r', '\n']).strip_prefix("data:") {
                    use std::io::Write;
                    if writeln!(out, "{}", data.trim_start()).is_err() {
                        return Ok(()); // the reader went away (`| head`)
                    }
                    printed += 1;
                }
            }
        }
        if printed < self.limit {
            eprintln!(
                "the stream ended after {printed} of {} messages: the flow was reloaded or removed, or weft stopped",
                self.limit
            );
        }
        Ok(())
    }
}

/// Percent-encodes a query or path value.
pub fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
