//! `switch`: the content-based router. Cases are tried in order; the first whose `check` (VRL)
//! is true runs its processors, and a case without `check` is the default. `continue: true`
//! goes on testing the cases after it, with the message as the case left it, so several cases
//! can apply. A message no case takes goes on unchanged. What the cases' processors make of the
//! message (rewritten, split, dropped) goes on through the rest of the pipeline.
//!
//! ```yaml
//! pipeline:
//!   - switch:
//!       - check: .type == "order"
//!         processors:
//!           - map: .kind = "sale"
//!       - check: .type == "refund"
//!         processors:
//!           - map: .amount = 0 - to_float!(.amount)
//!         continue: true            # the cases after this one are tested too
//!       - processors:               # default
//!           - map: .audited = true
//! ```

use serde::Deserialize;

use super::{Processor, ProcessorConfig, build_steps};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::flow::{ProcessorSlot, run_nested};
use crate::core::mapping::Mapping;
use crate::core::{Context, MappingError, Message, Step, StepError, Trail, Value};

/// The cases, in order.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SwitchProcessor")]
pub struct Config(pub Vec<CaseConfig>);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SwitchProcessorCase")]
#[serde(deny_unknown_fields)]
pub struct CaseConfig {
    /// A VRL condition; a case without one always matches (the default case).
    #[serde(default)]
    pub check: Option<String>,
    /// What runs on a message this case takes.
    #[serde(default)]
    pub processors: Vec<ProcessorConfig>,
    /// Go on testing the cases after this one.
    #[serde(default, rename = "continue")]
    pub fall_through: bool,
}

struct Case {
    check: Option<Mapping>,
    /// The check as written, for the dashboard's drawing.
    check_text: Option<String>,
    steps: Vec<ProcessorSlot<Processor>>,
    fall_through: bool,
}

pub struct Switch {
    cases: Vec<Case>,
}

impl super::Spec for Config {
    type Built = Switch;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Switch, Vec<BuildError>> {
        if self.0.is_empty() {
            return Err(vec![BuildError::new(
                "",
                "a switch needs at least one case",
            )]);
        }
        let mut errors = Vec::new();
        let mut cases = Vec::new();
        for (i, case) in self.0.iter().enumerate() {
            let check = case.check.as_deref().and_then(|c| {
                Mapping::compile(c)
                    .map_err(|d| {
                        errors.extend(BuildError::from_diagnostics(&format!("[{i}].check"), d))
                    })
                    .ok()
            });
            let steps = build_steps(
                &case.processors,
                &format!("[{i}].processors"),
                shared,
                resources,
            )
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
            cases.push(Case {
                check,
                check_text: case.check.as_ref().map(|c| c.trim().to_string()),
                steps,
                fall_through: case.fall_through,
            });
        }
        if errors.is_empty() {
            Ok(Switch { cases })
        } else {
            Err(errors)
        }
    }

    fn nested(built: &Switch) -> Vec<super::Nested<'_>> {
        built
            .cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let test = c.check_text.as_deref().unwrap_or("any other");
                let more = if c.fall_through {
                    ", then the next cases"
                } else {
                    ""
                };
                super::Nested::new(format!("case {i}: {test}{more}"), &c.steps)
            })
            .collect()
    }
}

impl Switch {
    fn takes(&self, i: usize, case: &Case, message: &Message) -> Result<bool, StepError> {
        match &case.check {
            None => Ok(true),
            Some(check) => match check.eval(&message.value, &message.metadata)? {
                Value::Boolean(b) => Ok(b),
                other => Err(MappingError(format!(
                    "switch case {i}: the check must be true or false, got {}",
                    crate::core::mapping::to_text(&other)
                ))
                .into()),
            },
        }
    }
}

impl crate::core::Processor for Switch {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        let mut messages = vec![message];
        for (i, case) in self.cases.iter().enumerate() {
            // Cases after a `continue` are tested on each message the earlier case made.
            let mut next = Vec::with_capacity(messages.len());
            let mut taken = Vec::new();
            for m in messages {
                if self.takes(i, case, &m)? {
                    taken.push(m);
                } else {
                    next.push(m);
                }
            }
            let taken_any = !taken.is_empty();
            if let [_] = taken.as_slice() {
                next.extend(run_nested(&case.steps, taken.remove(0), cx).await?);
            } else if taken_any {
                // Several (parts of a split): concurrently, each with its own trail, as the
                // pipeline runs parts (an aggregate further on gathers them together).
                let mut trails: Vec<Trail> = taken.iter().map(|_| Trail::default()).collect();
                let (flow, store, tap, reads_metadata) =
                    (cx.flow, cx.store, cx.tap, cx.reads_metadata);
                let split = &cx.split;
                let ran =
                    futures_util::future::join_all(taken.into_iter().zip(trails.iter_mut()).map(
                        |(m, trail)| async move {
                            let mut cx = Context {
                                flow,
                                store,
                                trail,
                                tap,
                                split: split.clone(),
                                reads_metadata,
                            };
                            run_nested(&case.steps, m, &mut cx).await
                        },
                    ))
                    .await;
                cx.trail.extend(trails);
                for result in ran {
                    next.extend(result?);
                }
            }
            messages = next;
            if taken_any && !case.fall_through {
                break;
            }
        }
        Ok(Step::from_messages(messages))
    }

    fn reads_metadata(&self) -> bool {
        self.cases.iter().any(|c| {
            c.check.as_ref().is_some_and(Mapping::reads_metadata)
                || c.steps
                    .iter()
                    .any(|s| crate::core::Processor::reads_metadata(&s.processor))
        })
    }
}
