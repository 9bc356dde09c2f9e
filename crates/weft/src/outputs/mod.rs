//! Outputs: where a flow delivers. This enum is the registry: one variant per output, named as
//! in YAML, one file each. Every output is wrapped in the retry stack (`core::retry`) by the flow,
//! so an output only reports what one attempt did.

mod amqp;
mod drop;
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
pub mod soap;
mod sql;
mod stdout;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::core::retry::{RetryConfig, RetryPolicy};
use crate::core::{Attempt, Message};

/// Every output weft knows, by its YAML name.
#[derive(Debug, Deserialize)]
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
}

/// What outputs share: one HTTP connection pool for the whole process.
#[derive(Clone, Default)]
pub struct Shared {
    pub http: HttpClient,
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
        }
    }

    pub fn retry(&self) -> RetryPolicy {
        match self {
            OutputConfig::HttpClient(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Graphql(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Soap(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Openapi(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Sql(c) => RetryPolicy::from(&c.retry),
            OutputConfig::RedisStreams(c) => RetryPolicy::from(&c.retry),
            OutputConfig::RedisList(c) => RetryPolicy::from(&c.retry),
            OutputConfig::RedisPubsub(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Nats(c) => RetryPolicy::from(&c.retry),
            OutputConfig::NatsJetstream(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Amqp(c) => RetryPolicy::from(&c.retry),
            OutputConfig::Mqtt(c) => RetryPolicy::from(&c.retry),
            _ => RetryPolicy::from(&RetryConfig::default()),
        }
    }

    pub fn build(&self, shared: &Shared, resources: &Resources) -> Result<Output, Vec<BuildError>> {
        Ok(match self {
            OutputConfig::HttpClient(c) => {
                Output::HttpClient(Box::new(c.build(&shared.http, resources)?))
            }
            OutputConfig::Graphql(c) => {
                Output::Graphql(Box::new(c.build_output(&shared.http, resources)?))
            }
            OutputConfig::Soap(c) => {
                Output::Soap(Box::new(c.build_output(&shared.http, resources)?))
            }
            OutputConfig::Openapi(c) => {
                Output::Openapi(Box::new(c.build_output(&shared.http, resources)?))
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

/// An output that shares its settings with a processor refuses the processor's `result`.
fn no_result(result: &Option<String>) -> Result<(), Vec<BuildError>> {
    match result {
        None => Ok(()),
        Some(_) => Err(vec![BuildError::new(
            "result",
            "`result` merges an answer into the message: it belongs to the processor of this name",
        )]),
    }
}
