//! Every metric the engine emits, in one place. Names start with `weft_`; labels are `flow` and
//! `component` (the component's config path, e.g. `pipeline[0].map` or `outputs[1].file`).
//! Handles are registered once per flow and component, so the hot path does no label lookups.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("the metrics recorder is installed only here")
        })
        .clone()
}

/// Per-flow metrics.
#[derive(Clone)]
pub struct FlowMetrics {
    pub received: Counter,
    pub filtered: Counter,
    pub failed: Counter,
    pub in_flight: Gauge,
    pub latency: Histogram,
}

impl FlowMetrics {
    pub fn new(flow: &str, input: &str) -> FlowMetrics {
        let labels = [("flow", flow.to_string()), ("component", input.to_string())];
        FlowMetrics {
            received: counter!("weft_messages_received_total", &labels),
            filtered: counter!("weft_messages_filtered_total", "flow" => flow.to_string()),
            failed: counter!("weft_messages_failed_total", &labels),
            in_flight: gauge!("weft_in_flight_messages", "flow" => flow.to_string()),
            latency: histogram!("weft_processing_seconds", "flow" => flow.to_string()),
        }
    }
}

/// Per-component metrics for processors and outputs.
#[derive(Clone)]
pub struct ComponentMetrics {
    pub sent: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dropped: Counter,
}

impl ComponentMetrics {
    pub fn new(flow: &str, component: &str) -> ComponentMetrics {
        let labels = [
            ("flow", flow.to_string()),
            ("component", component.to_string()),
        ];
        ComponentMetrics {
            sent: counter!("weft_messages_sent_total", &labels),
            failed: counter!("weft_messages_failed_total", &labels),
            retried: counter!("weft_messages_retried_total", &labels),
            dropped: counter!("weft_messages_dropped_total", &labels),
        }
    }
}

/// Counts a request an input's `auth` refused, by the reason it was told (a short fixed text:
/// `invalid signature`, `signature timestamp outside the tolerance`…): a sender whose secret
/// was rotated shows here, not only in WARN lines.
pub fn auth_refused(flow: &str, reason: &'static str) {
    counter!("weft_auth_refused_total", "flow" => flow.to_string(), "reason" => reason)
        .increment(1);
}

/// Counts a message given up on and kept as a dead letter, by the stage that failed it:
/// `pipeline` (a processor), `output`, or `unreadable` (a stored message that no longer decodes).
/// Rare, so the handle is looked up each time.
pub fn dead_lettered(flow: &str, stage: &'static str) {
    counter!("weft_messages_dead_lettered_total", "flow" => flow.to_string(), "stage" => stage)
        .increment(1);
}

/// A polling flow's progress, set when `/metrics` is scraped: how old its saved checkpoint is,
/// and when its last poll ended without a failure (0 before either happened).
pub fn polling(flow: &str, saved_ms: i64, polled_ms: i64, now_ms: i64) {
    if saved_ms > 0 {
        gauge!("weft_checkpoint_age_seconds", "flow" => flow.to_string())
            .set((now_ms - saved_ms).max(0) as f64 / 1000.0);
    }
    gauge!("weft_last_poll_timestamp_seconds", "flow" => flow.to_string())
        .set(polled_ms as f64 / 1000.0);
}

/// The store's write health, set when `/metrics` is scraped (the store counts; this copies).
/// On a cluster: the nodes alive.
pub fn cluster_nodes(nodes: u32) {
    gauge!("weft_cluster_nodes").set(f64::from(nodes));
}

/// On a cluster: whether this node holds the lease of `flow`'s input (it runs here).
pub fn lease_held(flow: &str, held: bool) {
    gauge!("weft_cluster_lease_held", "flow" => flow.to_string()).set(if held { 1.0 } else { 0.0 });
}

pub fn store_health(health: &weft_store::Health) {
    counter!("weft_store_commit_failures_total").absolute(health.failed_commits);
    gauge!("weft_store_writable").set(if health.failing.is_some() { 0.0 } else { 1.0 });
    gauge!("weft_store_low_space").set(if health.low_space.is_some() { 1.0 } else { 0.0 });
}
