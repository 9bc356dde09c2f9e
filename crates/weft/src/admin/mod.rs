//! The admin endpoint: Prometheus `/metrics`, `/health`, and (with durable flows) the
//! dead-letter API in [`dlq`]. Bound to 127.0.0.1 by default: the DLQ API shows message contents.

pub mod dlq;

use axum::Router;
use axum::routing::get;
use http::header;
use metrics_exporter_prometheus::PrometheusHandle;

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9464";

pub fn router(metrics: PrometheusHandle, store: Option<weft_store::Store>) -> Router {
    let base = match store {
        Some(store) => dlq::router(store),
        None => Router::new(),
    };
    base.route(
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
