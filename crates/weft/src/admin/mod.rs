//! The admin endpoint: Prometheus `/metrics`, `/health`, and (with durable flows) the
//! dead-letter API in [`dlq`]. Bound to 127.0.0.1 by default: the DLQ API shows message contents.
//! Bound anywhere else, weft refuses to start without a token (`admin.token`, `--admin-token`);
//! with one, every request must carry `Authorization: Bearer <token>` (else `401`).

pub mod dlq;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header;
use metrics_exporter_prometheus::PrometheusHandle;

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9464";

pub fn router(
    metrics: PrometheusHandle,
    store: Option<weft_store::Store>,
    token: Option<crate::clients::secret::Secret>,
) -> Router {
    let routes = routes(metrics, store);
    match token {
        None => routes,
        Some(token) => routes.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    let given = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if token.matches(given.as_bytes()) {
                        next.run(request).await
                    } else {
                        (
                            http::StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "the admin endpoint needs `Authorization: Bearer <token>`",
                        )
                            .into_response()
                    }
                }
            },
        )),
    }
}

fn routes(metrics: PrometheusHandle, store: Option<weft_store::Store>) -> Router {
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
