//! A flow's components with what the metrics counted for each, read back from the Prometheus
//! exposition weft already keeps (`/metrics`), and each step's own counts
//! ([`crate::core::flow::StepCounts`]): what `GET /api/v1/flows/{flow}/components` and the
//! dashboard's flow page show, with where each component sits (a `switch` case's steps, a
//! `fallback`'s outputs).

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

/// One component of a flow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentInfo {
    /// Its place in the config: `input.http_server`, `pipeline[0].map`, `output.http_client`.
    pub id: String,
    /// `input`, `step` or `output`.
    pub role: &'static str,
    /// The step or output it sits inside (a `switch` case's step, a `fallback`'s output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What takes a message to it inside its parent: `case 0: .kind == "refund"`, `on failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Inputs: messages taken in; steps: messages they finished with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Steps: messages handed on (each part of a split one); outputs: messages accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Inputs: what could not be made a message; steps: messages they failed; outputs:
    /// deliveries failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// Outputs: attempts to be made again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried: Option<u64>,
    /// Steps: messages dropped on purpose; outputs: dropped by a status class (`drop_on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Steps: messages taken into a group (`aggregate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grouped: Option<u64>,
    /// How long it took: outputs, a delivery; steps, those that wait (an API call, a query).
    /// None for a step done in place, or before the first timing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

impl ComponentInfo {
    fn new(id: String, role: &'static str) -> ComponentInfo {
        ComponentInfo {
            id,
            role,
            parent: None,
            branch: None,
            received: None,
            sent: None,
            failed: None,
            retried: None,
            dropped: None,
            grouped: None,
            latency: None,
        }
    }

    fn inside(mut self, parent: Option<(&str, &str)>) -> ComponentInfo {
        if let Some((parent, branch)) = parent {
            self.parent = Some(parent.to_string());
            // A case's check is config text, `${…}` filled in: shown as the settings are.
            self.branch = Some(crate::config::secret::shown(None, branch).into_owned());
        }
        self
    }
}

/// How long something took: the flow's messages from intake to delivery, or one component.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Latency {
    /// Messages timed.
    pub count: u64,
    /// The upper bound, in milliseconds, of the histogram bucket holding the median; none
    /// before any message.
    pub p50_ms: Option<f64>,
    /// Likewise for the 99th percentile.
    pub p99_ms: Option<f64>,
}

/// A flow's components, in the order messages pass them, and its latency.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowComponents {
    pub components: Vec<ComponentInfo>,
    pub latency: Latency,
}

/// `flow`'s components and latency, from what `metrics` (the recorder weft runs with) holds.
pub fn of(
    flow: &crate::load::RunFlow,
    metrics: Option<&metrics_exporter_prometheus::PrometheusHandle>,
) -> FlowComponents {
    let mut steps = Vec::new();
    add_steps(flow.steps(), "", None, &mut steps);
    let mut outputs = Vec::new();
    for slot in flow.outputs() {
        let first = outputs.len();
        add_output(&slot.id, &slot.output, None, &mut outputs);
        outputs[first].latency = timed(&slot.timings);
    }
    let text = metrics.map_or_else(String::new, |m| {
        // Histogram samples wait to be folded in; fold them, as a scrape does.
        m.run_upkeep();
        m.render()
    });
    read(&text, &flow.name, &flow.input_id, steps, outputs)
}

fn timed(timings: &crate::core::timings::Timings) -> Option<Latency> {
    timings.summary().map(|s| Latency {
        count: s.count,
        p50_ms: Some(s.p50_ms),
        p99_ms: Some(s.p99_ms),
    })
}

/// `steps` with their counts, each followed by the steps nested inside it, depth first.
fn add_steps(
    steps: &[crate::core::flow::ProcessorSlot<crate::processors::Processor>],
    path: &str,
    parent: Option<(&str, &str)>,
    into: &mut Vec<ComponentInfo>,
) {
    for slot in steps {
        let id = crate::core::step_path(path, &slot.id);
        let tally = slot.counts.tally();
        let mut info = ComponentInfo::new(id.clone(), "step").inside(parent);
        info.received = Some(tally.entered);
        info.sent = Some(tally.emitted);
        info.failed = Some(tally.failed);
        info.dropped = Some(tally.dropped);
        info.grouped = (tally.grouped > 0).then_some(tally.grouped);
        info.latency = timed(&slot.timings);
        into.push(info);
        for nested in slot.processor.nested() {
            add_steps(nested.steps, &id, Some((&id, &nested.label)), into);
        }
    }
}

/// An output, then the outputs inside it (a strategy's), depth first.
fn add_output(
    id: &str,
    output: &crate::outputs::Output,
    parent: Option<(&str, &str)>,
    into: &mut Vec<ComponentInfo>,
) {
    into.push(ComponentInfo::new(id.to_string(), "output").inside(parent));
    for inner in output.inner() {
        let inner_id = crate::core::step_path(id, inner.id);
        add_output(&inner_id, inner.output, Some((id, &inner.label)), into);
    }
}

/// A sample's labels: (name, value) pairs.
type Labels<'a> = Vec<(&'a str, String)>;

/// One sample line of the exposition: its name, labels and value.
fn sample(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        // The value ends at the first quote not escaped.
        let mut text = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        text.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => text.push(c),
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(','), text));
        rest = &after[end + 1..];
    }
    Some((name, labels, value))
}

fn label<'a>(labels: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// Reads `flow`'s figures out of the exposition `text`: the input's (named `input`) and the
/// outputs' (given in order, counted only when weft counts them: not inside a strategy), then
/// the latency; `steps` come counted.
fn read(
    text: &str,
    flow: &str,
    input: &str,
    steps: Vec<ComponentInfo>,
    mut outputs: Vec<ComponentInfo>,
) -> FlowComponents {
    let mut counts: HashMap<(&str, String), u64> = HashMap::new();
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut count = 0;
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        if label(&labels, "flow") != Some(flow) {
            continue;
        }
        match name {
            "weft_processing_seconds_bucket" => {
                let le = label(&labels, "le").and_then(|le| le.parse::<f64>().ok());
                if let Some(le) = le {
                    buckets.push((le, value as u64));
                }
            }
            "weft_processing_seconds_count" => count = value as u64,
            _ => {
                if let Some(component) = label(&labels, "component") {
                    counts.insert((name, component.to_string()), value as u64);
                }
            }
        }
    }
    let get = |name: &str, id: &str| counts.get(&(name, id.to_string())).copied();
    let mut first = ComponentInfo::new(input.to_string(), "input");
    first.received = Some(get("weft_messages_received_total", input).unwrap_or(0));
    first.failed = Some(get("weft_messages_failed_total", input).unwrap_or(0));
    let mut components = vec![first];
    components.extend(steps);
    for output in outputs.iter_mut().filter(|o| o.parent.is_none()) {
        let id = &output.id;
        output.sent = Some(get("weft_messages_sent_total", id).unwrap_or(0));
        output.failed = Some(get("weft_messages_failed_total", id).unwrap_or(0));
        output.retried = Some(get("weft_messages_retried_total", id).unwrap_or(0));
        output.dropped = Some(get("weft_messages_dropped_total", id).unwrap_or(0));
    }
    components.extend(outputs);
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let quantile = |q: f64| {
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(le, _)| le * 1000.0)
            .filter(|ms| ms.is_finite())
    };
    FlowComponents {
        components,
        latency: Latency {
            count,
            p50_ms: (count > 0).then(|| quantile(0.5)).flatten(),
            p99_ms: (count > 0).then(|| quantile(0.99)).flatten(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE weft_messages_sent_total counter
weft_messages_sent_total{flow="orders",component="output.http_client"} 18
weft_messages_failed_total{flow="orders",component="output.http_client"} 2
weft_messages_retried_total{flow="orders",component="output.http_client"} 5
weft_messages_received_total{flow="orders",component="input.http_server"} 21
weft_messages_received_total{flow="other",component="input.http_server"} 99
weft_messages_failed_total{flow="orders",component="input.http_server"} 1
weft_processing_seconds_bucket{flow="orders",le="0.001"} 10
weft_processing_seconds_bucket{flow="orders",le="0.005"} 19
weft_processing_seconds_bucket{flow="orders",le="0.01"} 20
weft_processing_seconds_bucket{flow="orders",le="+Inf"} 20
weft_processing_seconds_count{flow="orders"} 20
weft_messages_sent_total{flow="a\"b",component="x"} 3
"#;

    #[test]
    fn a_flows_counts_and_latency_are_read_back_from_the_exposition() {
        let read = read(
            EXPOSITION,
            "orders",
            "input.http_server",
            vec![ComponentInfo::new("pipeline[0].map".into(), "step")],
            vec![ComponentInfo::new("output.http_client".into(), "output")],
        );
        let ids: Vec<_> = read
            .components
            .iter()
            .map(|c| (c.id.as_str(), c.role))
            .collect();
        assert_eq!(
            ids,
            [
                ("input.http_server", "input"),
                ("pipeline[0].map", "step"),
                ("output.http_client", "output")
            ]
        );
        assert_eq!(read.components[0].received, Some(21));
        assert_eq!(read.components[0].failed, Some(1));
        let output = &read.components[2];
        assert_eq!(
            (output.sent, output.failed, output.retried, output.dropped),
            (Some(18), Some(2), Some(5), Some(0))
        );
        assert_eq!(read.latency.count, 20);
        assert_eq!(read.latency.p50_ms, Some(1.0));
        assert_eq!(read.latency.p99_ms, Some(10.0));
        let (_, labels, _) = sample(r#"m{flow="a\"b",component="x"} 3"#).unwrap();
        assert_eq!(label(&labels, "flow"), Some("a\"b"));
    }
}
