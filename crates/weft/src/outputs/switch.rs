//! `switch` (as an output): routes by content. The first case whose `check` (VRL) is true
//! delivers to its `output` (or all of its `outputs`); `continue: true` goes on testing the
//! cases after it, and a case without `check` takes everything that reaches it. A message no
//! case takes fails (end with a case without `check`, e.g. to `drop`, to let such messages go).
//! One attempt delivers to every output chosen; the switch's own `retry` decides about the
//! next (an inner output may not set one), so an output that already accepted may see
//! the message again (at least once).
//!
//! ```yaml
//! output:
//!   switch:
//!     cases:
//!       - check: (to_float(.amount) ?? 0) > 1000
//!         output: { http_client: { url: "https://audit.example.com/large" } }
//!         continue: true
//!       - check: .country == "DE"
//!         output: { http_client: { url: "https://eu.example.com/orders" } }
//!       - output: { http_client: { url: "https://us.example.com/orders" } }
//! ```

use serde::Deserialize;

use super::{Output, OutputConfig, build_inner, combine, send_boxed};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::mapping::{Mapping, to_text};
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SwitchOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cases, tried in order: a message goes to the first whose `check` it passes.
    pub cases: Vec<CaseConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SwitchOutputCase")]
#[serde(deny_unknown_fields)]
pub struct CaseConfig {
    /// A VRL condition; a case without one takes every message that reaches it.
    #[serde(default)]
    pub check: Option<String>,
    /// The output for this case.
    #[serde(default)]
    pub output: Option<OutputConfig>,
    /// Several outputs for this case: all must accept.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Go on testing the cases after this one.
    #[serde(default, rename = "continue")]
    pub go_on: bool,
}

impl super::Spec for Config {
    type Built = Switch;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Switch, Vec<BuildError>> {
        let mut errors = Vec::new();
        if self.cases.is_empty() {
            errors.push(BuildError::new("cases", "name at least one case"));
        }
        let mut cases = Vec::new();
        for (i, case) in self.cases.iter().enumerate() {
            let check = case.check.as_deref().and_then(|c| {
                Mapping::compile(c)
                    .map_err(|d| {
                        errors.extend(BuildError::from_diagnostics(&format!("cases.{i}.check"), d))
                    })
                    .ok()
            });
            if case.output.is_some() != case.outputs.is_empty() {
                errors.push(BuildError::new(
                    &format!("cases.{i}"),
                    "give a case either `output` or `outputs`",
                ));
                continue;
            }
            let (path, list) = match &case.output {
                Some(one) => (format!("cases.{i}.output"), std::slice::from_ref(one)),
                None => (format!("cases.{i}.outputs"), case.outputs.as_slice()),
            };
            let mut outputs = build_inner(list, &path, shared, resources, &mut errors);
            // Named as a path, like every component: `cases[1].outputs[0].http_client`.
            for (id, _) in &mut outputs {
                if let Some(rest) = id.strip_prefix(&format!("cases.{i}.")) {
                    *id = format!("cases[{i}].{rest}");
                }
            }
            if case.output.is_some()
                && let Some((id, _)) = outputs.first_mut()
            {
                *id = format!("cases[{i}].output.{}", id.rsplit('.').next().unwrap_or(""));
            }
            cases.push(Case {
                check,
                check_text: case.check.as_ref().map(|c| c.trim().to_string()),
                outputs,
                go_on: case.go_on,
            });
        }
        if errors.is_empty() {
            Ok(Switch { cases })
        } else {
            Err(errors)
        }
    }
}

struct Case {
    check: Option<Mapping>,
    /// The check as written, for the dashboard's drawing.
    check_text: Option<String>,
    outputs: Vec<(String, Output)>,
    go_on: bool,
}

pub struct Switch {
    cases: Vec<Case>,
}

impl Switch {
    pub(super) fn inner(&self) -> Vec<super::Inner<'_>> {
        let mut inner = Vec::new();
        for (i, case) in self.cases.iter().enumerate() {
            let test = case.check_text.as_deref().unwrap_or("any other");
            let more = if case.go_on {
                ", then the next cases"
            } else {
                ""
            };
            for (id, output) in &case.outputs {
                inner.push(super::Inner {
                    label: format!("case {i}: {test}{more}"),
                    id,
                    output,
                });
            }
        }
        inner
    }
}

impl crate::core::Output for Switch {
    async fn send(&self, message: &Message) -> Attempt {
        let mut chosen = Vec::new();
        for (i, case) in self.cases.iter().enumerate() {
            let taken = match &case.check {
                None => true,
                Some(check) => match check.eval(&message.value, &message.metadata) {
                    Ok(Value::Boolean(b)) => b,
                    Ok(other) => {
                        return Attempt::Fatal {
                            reason: format!(
                                "switch case {i}: the check must be true or false, got {}",
                                to_text(&other)
                            ),
                            response: None,
                        };
                    }
                    Err(e) => {
                        return Attempt::Fatal {
                            reason: format!("switch case {i}: {e}"),
                            response: None,
                        };
                    }
                },
            };
            if taken {
                chosen.extend(case.outputs.iter());
                if !case.go_on {
                    break;
                }
            }
        }
        if chosen.is_empty() {
            return Attempt::Fatal {
                reason: "no switch case takes this message".into(),
                response: None,
            };
        }
        let outcomes =
            futures_util::future::join_all(chosen.iter().map(|(id, output)| async move {
                (id.as_str(), send_boxed(output, message).await)
            }))
            .await;
        combine(outcomes)
    }

    fn reads_metadata(&self) -> bool {
        self.cases.iter().any(|c| {
            c.check.as_ref().is_some_and(Mapping::reads_metadata)
                || c.outputs
                    .iter()
                    .any(|(_, o)| crate::core::Output::reads_metadata(o))
        })
    }
}
