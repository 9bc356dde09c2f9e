//! Outputs: where a flow delivers. This enum is the registry: one variant per output, named as
//! in YAML, one file each. Every output is wrapped in the retry stack (`core::retry`) by the flow,
//! so an output only reports what one attempt did.

mod amqp;
mod drop;
mod fallback;
mod file;
pub mod graphql;
mod http_client;
mod mqtt;
mod nats;
mod nats_jetstream;
pub mod openapi;
mod redis_list;
mod redis_pubsub;
mod redis_streams;
mod round_robin;
pub mod soap;
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

/// Every output weft knows, by its YAML name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputConfig {
    HttpClient(Box<http_client::Config>),
    Graphql(Box<graphql::Config>),
    Soap(Box<soap::Config>),
    Openapi(Box<openapi::Config>),
    Sql(Box<sql::Config>),
    RedisStreams(Box<redis_streams::Config>),
    RedisList(Box<redis_list::Config>),
    RedisPubsub(Box<redis_pubsub::Config>),
    Nats(Box<nats::Config>),
    NatsJetstream(Box<nats_jetstream::Config>),
    Amqp(Box<amqp::Config>),
    Mqtt(Box<mqtt::Config>),
    Stdout(stdout::Config),
    File(file::Config),
    Drop(drop::Config),
    Fallback(Box<StrategyConfig>),
    RoundRobin(Box<StrategyConfig>),
    Switch(Box<switch::SwitchConfig>),
}

impl OutputConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConfig::HttpClient(_) => "http_client",
            OutputConfig::Graphql(_) => "graphql",
            OutputConfig::Soap(_) => "soap",
            OutputConfig::Openapi(_) => "openapi",
            OutputConfig::Sql(_) => "sql",
            OutputConfig::RedisStreams(_) => "redis_streams",
            OutputConfig::RedisList(_) => "redis_list",
            OutputConfig::RedisPubsub(_) => "redis_pubsub",
            OutputConfig::Nats(_) => "nats",
            OutputConfig::NatsJetstream(_) => "nats_jetstream",
            OutputConfig::Amqp(_) => "amqp",
            OutputConfig::Mqtt(_) => "mqtt",
            OutputConfig::Stdout(_) => "stdout",
            OutputConfig::File(_) => "file",
            OutputConfig::Drop(_) => "drop",
            OutputConfig::Fallback(_) => "fallback",
            OutputConfig::RoundRobin(_) => "round_robin",
            OutputConfig::Switch(_) => "switch",
        }
    }

    /// The output's `retry:` settings, for the outputs that have them.
    pub fn retry_config(&self) -> Option<&RetryConfig> {
        Some(match self {
            OutputConfig::HttpClient(c) => &c.retry,
            OutputConfig::Graphql(c) => &c.retry,
            OutputConfig::Soap(c) => &c.retry,
            OutputConfig::Openapi(c) => &c.retry,
            OutputConfig::Sql(c) => &c.retry,
            OutputConfig::RedisStreams(c) => &c.retry,
            OutputConfig::RedisList(c) => &c.retry,
            OutputConfig::RedisPubsub(c) => &c.retry,
            OutputConfig::Nats(c) => &c.retry,
            OutputConfig::NatsJetstream(c) => &c.retry,
            OutputConfig::Amqp(c) => &c.retry,
            OutputConfig::Mqtt(c) => &c.retry,
            OutputConfig::Fallback(c) | OutputConfig::RoundRobin(c) => &c.retry,
            OutputConfig::Switch(c) => &c.retry,
            _ => return None,
        })
    }

    /// The output's retry policy in a durable (`true`) or direct flow.
    pub fn retry(&self, durable: bool) -> RetryPolicy {
        self.retry_config()
            .cloned()
            .unwrap_or_default()
            .policy(durable)
    }

    pub fn build(&self, shared: &Shared, resources: &Resources) -> Result<Output, Vec<BuildError>> {
        Ok(match self {
            OutputConfig::HttpClient(c) => {
                Output::HttpClient(Box::new(c.build(&shared.http, resources)?))
            }
            OutputConfig::Graphql(c) => {
                Output::Graphql(Box::new(c.build(&shared.http, resources)?))
            }
            OutputConfig::Soap(c) => Output::Soap(Box::new(c.build(&shared.http, resources)?)),
            OutputConfig::Openapi(c) => {
                Output::Openapi(Box::new(c.build(&shared.http, resources)?))
            }
            OutputConfig::Sql(c) => Output::Sql(Box::new(c.build(resources)?)),
            OutputConfig::RedisStreams(c) => Output::RedisStreams(Box::new(c.build()?)),
            OutputConfig::RedisList(c) => Output::RedisList(Box::new(c.build()?)),
            OutputConfig::RedisPubsub(c) => Output::RedisPubsub(Box::new(c.build()?)),
            OutputConfig::Nats(c) => Output::Nats(Box::new(c.build()?)),
            OutputConfig::NatsJetstream(c) => Output::NatsJetstream(Box::new(c.build()?)),
            OutputConfig::Amqp(c) => Output::Amqp(Box::new(c.build()?)),
            OutputConfig::Mqtt(c) => Output::Mqtt(Box::new(c.build()?)),
            OutputConfig::Stdout(c) => Output::Stdout(c.build()),
            OutputConfig::File(c) => Output::File(c.build()?),
            OutputConfig::Drop(_) => Output::Drop,
            OutputConfig::Fallback(c) => {
                Output::Fallback(Box::new(c.build_fallback(shared, resources)?))
            }
            OutputConfig::RoundRobin(c) => {
                Output::RoundRobin(Box::new(c.build_round_robin(shared, resources)?))
            }
            OutputConfig::Switch(c) => Output::Switch(Box::new(c.build(shared, resources)?)),
        })
    }
}

pub enum Output {
    HttpClient(Box<http_client::HttpClientOutput>),
    Graphql(Box<graphql::GraphqlOutput>),
    Soap(Box<soap::SoapOutput>),
    Openapi(Box<openapi::OpenApiOutput>),
    Sql(Box<sql::SqlOutput>),
    RedisStreams(Box<redis_streams::RedisStreamsOutput>),
    RedisList(Box<redis_list::RedisListOutput>),
    RedisPubsub(Box<redis_pubsub::RedisPubsubOutput>),
    Nats(Box<nats::NatsOutput>),
    NatsJetstream(Box<nats_jetstream::NatsJetstreamOutput>),
    Amqp(Box<amqp::AmqpOutput>),
    Mqtt(Box<mqtt::MqttOutput>),
    Stdout(stdout::Stdout),
    File(file::FileOutput),
    Drop,
    Fallback(Box<fallback::Fallback>),
    RoundRobin(Box<round_robin::RoundRobin>),
    Switch(Box<switch::Switch>),
    /// `weft test`'s stand-in for a configured output (never built from YAML).
    Mock(Box<dyn StandIn>),
}

impl crate::core::Output for Output {
    async fn send(&self, message: &Message) -> Attempt {
        match self {
            Output::HttpClient(o) => o.send(message).await,
            Output::Graphql(o) => o.send(message).await,
            Output::Soap(o) => o.send(message).await,
            Output::Openapi(o) => o.send(message).await,
            Output::Sql(o) => o.send(message).await,
            Output::RedisStreams(o) => o.send(message).await,
            Output::RedisList(o) => o.send(message).await,
            Output::RedisPubsub(o) => o.send(message).await,
            Output::Nats(o) => o.send(message).await,
            Output::NatsJetstream(o) => o.send(message).await,
            Output::Amqp(o) => o.send(message).await,
            Output::Mqtt(o) => o.send(message).await,
            Output::Stdout(o) => o.send(message).await,
            Output::File(o) => o.send(message).await,
            Output::Drop => Attempt::Delivered,
            Output::Fallback(o) => o.send(message).await,
            Output::RoundRobin(o) => o.send(message).await,
            Output::Switch(o) => o.send(message).await,
            Output::Mock(o) => o.send(message).await,
        }
    }

    fn reads_metadata(&self) -> bool {
        match self {
            Output::HttpClient(o) => o.reads_metadata(),
            Output::Graphql(o) => o.reads_metadata(),
            Output::Soap(o) => o.reads_metadata(),
            Output::Openapi(o) => o.reads_metadata(),
            Output::Sql(o) => o.reads_metadata(),
            Output::Mqtt(o) => o.reads_metadata(),
            Output::Fallback(o) => o.reads_metadata(),
            Output::RoundRobin(o) => o.reads_metadata(),
            Output::Switch(o) => o.reads_metadata(),
            Output::Mock(o) => o.reads_metadata(),
            Output::RedisStreams(_)
            | Output::RedisList(_)
            | Output::RedisPubsub(_)
            | Output::Nats(_)
            | Output::NatsJetstream(_)
            | Output::Amqp(_)
            | Output::Stdout(_)
            | Output::File(_)
            | Output::Drop => false,
        }
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
/// failure was (waiting the longest `Retry-After` asked), else fatal.
fn combine(outcomes: Vec<(&str, Attempt)>) -> Attempt {
    let mut retryable = false;
    let mut wait: Option<Duration> = None;
    let mut reasons = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Attempt::Delivered | Attempt::Drop { .. } => {}
            Attempt::Retryable {
                reason,
                retry_after,
                ..
            } => {
                retryable = true;
                wait = wait.max(retry_after);
                reasons.push(format!("{id}: {reason}"));
            }
            Attempt::Fatal { reason, .. } => reasons.push(format!("{id}: {reason}")),
        }
    }
    match (reasons.is_empty(), retryable) {
        (true, _) => Attempt::Delivered,
        (false, true) => Attempt::Retryable {
            reason: reasons.join("; "),
            retry_after: wait,
            response: None,
        },
        (false, false) => Attempt::Fatal {
            reason: reasons.join("; "),
            response: None,
        },
    }
}

fn accepted(outcome: &Attempt) -> bool {
    matches!(outcome, Attempt::Delivered | Attempt::Drop { .. })
}
