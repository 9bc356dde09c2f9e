//! Outputs: where a flow delivers. One file per output; `registry!` below lists them, one line
//! each, and writes the enums and matches; [`Spec`] is what each output's `Config` provides. Every output is wrapped in the retry stack (`core::retry`) by the flow,
//! so an output only reports what one attempt did.

mod amqp;
mod drop;
mod fallback;
mod file;
mod graphql;
mod http_client;
mod kafka;
mod mqtt;
mod nats;
mod nats_jetstream;
mod openapi;
mod redis_list;
mod redis_pubsub;
mod redis_streams;
mod round_robin;
mod s3;
mod sftp;
mod smtp;
mod soap;
mod sql;
mod stdout;
mod switch;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::retry::{RetryConfig, RetryPolicy};
use crate::core::{Attempt, Message};

/// What the registry asks of an output's config struct (`Config` in the output's file).
/// Deliberately without defaults: an output with `retry:` that did not hand it over here would
/// ignore it, so each one says what it has.
pub trait Spec {
    /// The built output.
    type Built: crate::core::Output;

    /// The output's `retry:` settings; `None` for an output that is never retried.
    fn retry_config(&self) -> Option<&RetryConfig>;

    /// Compiles what can be compiled and checks what can be checked without running.
    fn build(&self, shared: &Shared, resources: &Resources)
    -> Result<Self::Built, Vec<BuildError>>;
}

/// Writes the registry from one line per output (`yaml_name: Variant`, the module being
/// `yaml_name`): the config and built enums and every match over them. The `mod` lines stay
/// outside the macro: rustfmt does not follow a module declared inside one.
macro_rules! registry {
    ($($name:ident: $variant:ident),* $(,)?) => {
        /// Every output weft knows, by its YAML name.
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum OutputConfig {
            $($variant(Box<$name::Config>),)*
        }

        /// The YAML names, in the registry's order.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];

        impl OutputConfig {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(OutputConfig::$variant(_) => stringify!($name),)*
                }
            }

            /// The output's `retry:` settings, for the outputs that have them.
            pub fn retry_config(&self) -> Option<&RetryConfig> {
                match self {
                    $(OutputConfig::$variant(c) => Spec::retry_config(&**c),)*
                }
            }

            pub fn build(
                &self,
                shared: &Shared,
                resources: &Resources,
            ) -> Result<Output, Vec<BuildError>> {
                Ok(match self {
                    $(OutputConfig::$variant(c) => {
                        Output::$variant(Box::new(Spec::build(&**c, shared, resources)?))
                    })*
                })
            }
        }

        /// A built output.
        pub enum Output {
            $($variant(Box<<$name::Config as Spec>::Built>),)*
            /// `weft test`'s stand-in for a configured output (never built from YAML).
            Mock(Box<dyn StandIn>),
        }

        impl crate::core::Output for Output {
            async fn send(&self, message: &Message) -> Attempt {
                // Each on the heap: the largest output's future (an HTTP call's, ~16 KiB)
                // would otherwise be the size of every flow's delivery future, and be copied
                // wherever one moves (a spawn, a join, each `.await` that pins it).
                match self {
                    $(Output::$variant(o) => Box::pin(crate::core::Output::send(&**o, message)).await,)*
                    Output::Mock(o) => StandIn::send(&**o, message).await,
                }
            }

            fn reads_metadata(&self) -> bool {
                match self {
                    $(Output::$variant(o) => crate::core::Output::reads_metadata(&**o),)*
                    Output::Mock(o) => StandIn::reads_metadata(&**o),
                }
            }
        }
    };
}

registry! {
    http_client: HttpClient,
    graphql: Graphql,
    soap: Soap,
    openapi: Openapi,
    sql: Sql,
    redis_streams: RedisStreams,
    redis_list: RedisList,
    redis_pubsub: RedisPubsub,
    nats: Nats,
    nats_jetstream: NatsJetstream,
    amqp: Amqp,
    kafka: Kafka,
    mqtt: Mqtt,
    smtp: Smtp,
    s3: S3,
    sftp: Sftp,
    stdout: Stdout,
    file: File,
    drop: Drop,
    fallback: Fallback,
    round_robin: RoundRobin,
    switch: Switch,
}

/// An output inside a strategy (`fallback`, `round_robin`, `switch`), and when it is used.
pub struct Inner<'a> {
    pub label: String,
    pub id: &'a str,
    pub output: &'a Output,
}

impl<'a> Inner<'a> {
    fn list(label: &str, outputs: &'a [(String, Output)]) -> Vec<Inner<'a>> {
        outputs
            .iter()
            .map(|(id, output)| Inner {
                label: label.to_string(),
                id,
                output,
            })
            .collect()
    }
}

impl Output {
    /// The outputs it sends through, when it is a strategy.
    pub fn inner(&self) -> Vec<Inner<'_>> {
        match self {
            Output::Fallback(f) => f.inner(),
            Output::RoundRobin(r) => r.inner(),
            Output::Switch(s) => s.inner(),
            _ => Vec::new(),
        }
    }
}

impl OutputConfig {
    /// `drop: {}`, the output of a flow that has nothing to send on.
    pub fn drop() -> OutputConfig {
        OutputConfig::Drop(Box::new(drop::Config {}))
    }

    /// The output's retry policy in a durable (`true`) or direct flow.
    pub fn retry(&self, durable: bool) -> RetryPolicy {
        self.retry_config()
            .cloned()
            .unwrap_or_default()
            .policy(durable)
    }
}

/// `outputs` and `retry` of an output strategy (`fallback`, `round_robin`): one attempt of the
/// strategy tries its outputs once as it says, and its own `retry` decides about the next.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "StrategyOutput")]
#[serde(deny_unknown_fields)]
pub struct StrategyConfig {
    /// The outputs, in order.
    pub outputs: Vec<OutputConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl StrategyConfig {
    /// The strategy's outputs, built, each named `outputs[i].<kind>`.
    fn build_list(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<Vec<(String, Output)>, Vec<BuildError>> {
        let mut errors = Vec::new();
        if self.outputs.len() < 2 {
            errors.push(BuildError::new("outputs", "name at least two outputs"));
        }
        let outputs = build_inner(&self.outputs, "outputs", shared, resources, &mut errors);
        if errors.is_empty() {
            Ok(outputs)
        } else {
            Err(errors)
        }
    }
}

/// Builds a list of inner outputs; `path` is where the list sits (dotted) for error fields.
fn build_inner(
    configs: &[OutputConfig],
    path: &str,
    shared: &Shared,
    resources: &Resources,
    errors: &mut Vec<BuildError>,
) -> Vec<(String, Output)> {
    let mut built = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let kind = config.kind();
        if config.retry_config().is_some_and(RetryConfig::is_set) {
            errors.push(BuildError::new(
                &format!("{path}.{i}.{kind}.retry"),
                "an output inside a strategy makes one attempt per attempt of the strategy: set `retry` on the strategy",
            ));
        }
        match config.build(shared, resources) {
            Ok(output) => built.push((format!("{path}[{i}].{kind}"), output)),
            Err(errs) => errors.extend(errs.into_iter().map(|mut e| {
                let at = format!("{path}.{i}.{kind}");
                e.field = if e.field.is_empty() {
                    at
                } else {
                    format!("{at}.{}", e.field)
                };
                e
            })),
        }
    }
    built
}

pub type Sending<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// An output that is not a component: `weft test`'s mock (in `crate::testing`, which sits above
/// the outputs and so cannot be named here), answering as the test says.
pub trait StandIn: Send + Sync {
    fn send<'a>(&'a self, message: &'a Message) -> Sending<'a>;
    fn reads_metadata(&self) -> bool;
}

/// One attempt at an inner output (boxed: outputs nest).
pub fn send_boxed<'a>(output: &'a Output, message: &'a Message) -> Sending<'a> {
    Box::pin(crate::core::Output::send(output, message))
}

/// Several inner attempts seen as one: accepted when all were; otherwise retryable when any
/// failure was (waiting the longest `Retry-After` asked), else fatal. The first answer a
/// failing output got stays the answer, so a dead letter keeps its status (`weft dlq
/// --status`); an output that got none (down, its circuit open) gives none.
fn combine(outcomes: Vec<(&str, Attempt)>) -> Attempt {
    let mut retryable = false;
    let mut wait: Option<Duration> = None;
    let mut reasons = Vec::new();
    let (mut first_retryable, mut first_fatal) = (None, None);
    for (id, outcome) in outcomes {
        match outcome {
            Attempt::Delivered | Attempt::Drop { .. } => {}
            Attempt::Retryable {
                reason,
                retry_after,
                response,
            } => {
                retryable = true;
                wait = wait.max(retry_after);
                reasons.push(format!("{id}: {reason}"));
                first_retryable = first_retryable.or(response);
            }
            Attempt::Fatal { reason, response } => {
                reasons.push(format!("{id}: {reason}"));
                first_fatal = first_fatal.or(response);
            }
        }
    }
    match (reasons.is_empty(), retryable) {
        (true, _) => Attempt::Delivered,
        (false, true) => Attempt::Retryable {
            reason: reasons.join("; "),
            retry_after: wait,
            response: first_retryable,
        },
        (false, false) => Attempt::Fatal {
            reason: reasons.join("; "),
            response: first_fatal,
        },
    }
}

fn accepted(outcome: &Attempt) -> bool {
    matches!(outcome, Attempt::Delivered | Attempt::Drop { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retry::Answer;

    fn answered(status: u16) -> Option<Answer> {
        Some(Answer {
            status,
            excerpt: String::new(),
        })
    }

    #[test]
    fn the_first_answer_a_failing_output_got_is_the_answer() {
        // A fallback whose first output is down (no answer) and whose second answers 503.
        let down = Attempt::Retryable {
            reason: "connection refused".into(),
            retry_after: None,
            response: None,
        };
        let busy = Attempt::Retryable {
            reason: "503".into(),
            retry_after: Some(Duration::from_secs(2)),
            response: answered(503),
        };
        match combine(vec![("a", down), ("b", busy)]) {
            Attempt::Retryable {
                response,
                retry_after,
                ..
            } => {
                assert_eq!(response.map(|r| r.status), Some(503));
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        // A retryable failure decides the verdict, and gives its status, over a fatal one.
        let refused = Attempt::Fatal {
            reason: "404".into(),
            response: answered(404),
        };
        let unavailable = Attempt::Retryable {
            reason: "502".into(),
            retry_after: None,
            response: answered(502),
        };
        match combine(vec![("a", refused.clone()), ("b", unavailable)]) {
            Attempt::Retryable { response, .. } => {
                assert_eq!(response.map(|r| r.status), Some(502));
            }
            other => panic!("{other:?}"),
        }
        match combine(vec![("a", Attempt::Delivered), ("b", refused)]) {
            Attempt::Fatal { response, reason } => {
                assert_eq!(response.map(|r| r.status), Some(404));
                assert_eq!(reason, "b: 404");
            }
            other => panic!("{other:?}"),
        }
    }
}
