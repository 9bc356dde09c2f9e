//! The admin endpoint: Prometheus `/metrics` and `/health`. Bound to 127.0.0.1 by default; it
//! exposes no message contents and no secrets.

use axum::Router;
use axum::routing::get;
use http::header;
use metrics_exporter_prometheus::PrometheusHandle;

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9464";

pub fn router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    metrics.run_upkeep();
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        )
}
