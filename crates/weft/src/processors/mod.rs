//! Processors: the steps of a flow's `pipeline`. This enum is the registry: one variant per
//! processor, named as in YAML, one file each. `switch`, `try`, `catch` and `enrich` hold
//! nested lists of processors, built by [`build_steps`] and run by `core::flow::run_nested`.

mod aggregate;
mod catch;
mod dedupe;
mod delay;
mod enrich;
mod filter;
mod graphql;
mod http;
mod log;
mod map;
mod openapi;
mod soap;
mod split;
mod sql;
mod switch;
mod template;
mod throttle;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::flow::ProcessorSlot;
use crate::core::mapping::{Mapping, Outcome, insert};
use crate::core::{Context, Message, Step, StepError, Value};

/// Every processor weft knows, by its YAML name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorConfig {
    Map(map::Config),
    Filter(filter::Config),
    Log(log::Config),
    Dedupe(dedupe::Config),
    Http(Box<http::Config>),
    Graphql(Box<graphql::Config>),
    Soap(Box<soap::Config>),
    Openapi(Box<openapi::Config>),
    Sql(Box<sql::Config>),
    Switch(Box<switch::Config>),
    Try(Box<catch::Config>),
    Catch(Box<catch::Config>),
    Split(
        #[serde(deserialize_with = "split::Config::deserialize_short")]
        #[schemars(with = "crate::config::schema_types::ShortOr<split::Config>")]
        split::Config,
    ),
    Aggregate(Box<aggregate::Config>),
    Enrich(Box<enrich::Config>),
    Throttle(Box<throttle::Config>),
    Delay(
        #[serde(deserialize_with = "delay::Config::deserialize_short")]
        #[schemars(with = "crate::config::schema_types::ShortOr<delay::Config>")]
        delay::Config,
    ),
    Template(Box<template::Config>),
}

impl ProcessorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Map(_) => "map",
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::Log(_) => "log",
            ProcessorConfig::Dedupe(_) => "dedupe",
            ProcessorConfig::Http(_) => "http",
            ProcessorConfig::Graphql(_) => "graphql",
            ProcessorConfig::Soap(_) => "soap",
            ProcessorConfig::Openapi(_) => "openapi",
            ProcessorConfig::Sql(_) => "sql",
            ProcessorConfig::Switch(_) => "switch",
            ProcessorConfig::Try(_) => "try",
            ProcessorConfig::Catch(_) => "catch",
            ProcessorConfig::Split(_) => "split",
            ProcessorConfig::Aggregate(_) => "aggregate",
            ProcessorConfig::Enrich(_) => "enrich",
            ProcessorConfig::Throttle(_) => "throttle",
            ProcessorConfig::Delay(_) => "delay",
            ProcessorConfig::Template(_) => "template",
        }
    }

    pub fn build(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<Processor, Vec<BuildError>> {
        Ok(match self {
            ProcessorConfig::Map(c) => Processor::Map(c.build()?),
            ProcessorConfig::Filter(c) => Processor::Filter(c.build()?),
            ProcessorConfig::Log(c) => Processor::Log(c.build()?),
            ProcessorConfig::Dedupe(c) => Processor::Dedupe(c.build()?),
            ProcessorConfig::Http(c) => {
                Processor::Http(Box::new(c.build(&shared.http, resources)?))
            }
            ProcessorConfig::Graphql(c) => {
                Processor::Graphql(Box::new(graphql::build(c, &shared.http, resources)?))
            }
            ProcessorConfig::Soap(c) => {
                Processor::Soap(Box::new(soap::build(c, &shared.http, resources)?))
            }
            ProcessorConfig::Openapi(c) => {
                Processor::Openapi(Box::new(openapi::build(c, &shared.http, resources)?))
            }
            ProcessorConfig::Sql(c) => Processor::Sql(Box::new(c.build(resources)?)),
            ProcessorConfig::Switch(c) => Processor::Switch(Box::new(c.build(shared, resources)?)),
            ProcessorConfig::Try(c) => Processor::Try(Box::new(c.build(shared, resources)?)),
            ProcessorConfig::Catch(c) => Processor::Catch(Box::new(c.build(shared, resources)?)),
            ProcessorConfig::Split(c) => Processor::Split(c.build()?),
            ProcessorConfig::Aggregate(c) => Processor::Aggregate(Box::new(c.build()?)),
            ProcessorConfig::Enrich(c) => Processor::Enrich(Box::new(c.build(shared, resources)?)),
            ProcessorConfig::Throttle(c) => Processor::Throttle(Box::new(c.build()?)),
            ProcessorConfig::Delay(c) => Processor::Delay(c.build()?),
            ProcessorConfig::Template(c) => Processor::Template(Box::new(c.build()?)),
        })
    }
}

pub enum Processor {
    Map(map::Map),
    Filter(filter::Filter),
    Log(log::Log),
    Dedupe(dedupe::Dedupe),
    Http(Box<http::Http>),
    Graphql(Box<graphql::Graphql>),
    Soap(Box<soap::Soap>),
    Openapi(Box<openapi::OpenApi>),
    Sql(Box<sql::Sql>),
    Switch(Box<switch::Switch>),
    Try(Box<catch::Block>),
    Catch(Box<catch::Block>),
    Split(split::Split),
    Aggregate(Box<aggregate::Aggregate>),
    Enrich(Box<enrich::Enrich>),
    Throttle(Box<throttle::Throttle>),
    Delay(delay::Delay),
    Template(Box<template::Template>),
}

impl Processor {
    /// Whether this step keeps state in the store (the engine opens it when any step does).
    pub fn uses_store(&self) -> bool {
        self.any(&|p| matches!(p, Processor::Dedupe(_)))
    }

    /// Whether it, or a step inside it, gathers messages into groups (`aggregate`): a message
    /// may then wait for others.
    pub fn gathers(&self) -> bool {
        self.any(&|p| matches!(p, Processor::Aggregate(_)))
    }

    /// Whether `test` holds for it or for a step nested inside it.
    fn any(&self, test: &dyn Fn(&Processor) -> bool) -> bool {
        let nested =
            |steps: &[ProcessorSlot<Processor>]| steps.iter().any(|s| s.processor.any(test));
        test(self)
            || match self {
                Processor::Switch(s) => s.steps().any(nested),
                Processor::Try(b) | Processor::Catch(b) => nested(b.steps()),
                Processor::Enrich(e) => nested(e.steps()),
                _ => false,
            }
    }
}

/// Builds a nested list of processors. `path` is where the list sits in the parent's settings
/// (dotted, e.g. `0.processors`): each step is named `<path>[i].<kind>` in errors, and its
/// build errors point at `<path>.i.<kind>.<field>`.
fn build_steps(
    configs: &[ProcessorConfig],
    path: &str,
    shared: &Shared,
    resources: &Resources,
) -> Result<Vec<ProcessorSlot<Processor>>, Vec<BuildError>> {
    let mut errors = Vec::new();
    let mut steps = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let kind = config.kind();
        let at = if path.is_empty() {
            format!("{i}.{kind}")
        } else {
            format!("{path}.{i}.{kind}")
        };
        match config.build(shared, resources) {
            Ok(processor) => steps.push(ProcessorSlot {
                id: if path.is_empty() {
                    format!("[{i}].{kind}")
                } else {
                    format!("{path}[{i}].{kind}")
                },
                processor,
            }),
            Err(errs) => errors.extend(errs.into_iter().map(|mut e| {
                e.field = if e.field.is_empty() {
                    at.clone()
                } else {
                    format!("{at}.{}", e.field)
                };
                e
            })),
        }
    }
    if errors.is_empty() {
        Ok(steps)
    } else {
        Err(errors)
    }
}

impl crate::core::Processor for Processor {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(match self {
            Processor::Map(p) => p.process(message)?.into(),
            Processor::Filter(p) => p.process(message)?.into(),
            Processor::Log(p) => p.process(message)?.into(),
            Processor::Dedupe(p) => p.process(message, cx).await?.into(),
            Processor::Http(p) => p.process(message).await?.into(),
            Processor::Graphql(p) => p.process(message).await?.into(),
            Processor::Soap(p) => p.process(message).await?.into(),
            Processor::Openapi(p) => p.process(message).await?.into(),
            Processor::Sql(p) => p.process(message).await?.into(),
            Processor::Switch(p) => p.process(message, cx).await?,
            Processor::Try(p) | Processor::Catch(p) => p.process(message, cx).await?,
            Processor::Split(p) => p.process(message)?,
            Processor::Aggregate(p) => p.process(message, cx).await?,
            Processor::Enrich(p) => p.process(message, cx).await?,
            Processor::Throttle(p) => p.process(message).await?.into(),
            Processor::Delay(p) => p.process(message).await?.into(),
            Processor::Template(p) => p.process(message)?.into(),
        })
    }

    fn catches(&self) -> bool {
        matches!(self, Processor::Catch(_))
    }

    fn reads_metadata(&self) -> bool {
        match self {
            Processor::Map(p) => p.program.reads_metadata(),
            Processor::Filter(p) => p.condition.reads_metadata(),
            Processor::Log(p) => p.message.reads_metadata(),
            Processor::Dedupe(p) => p.key.reads_metadata(),
            Processor::Http(p) => p.reads_metadata(),
            Processor::Graphql(p) => p.reads_metadata(),
            Processor::Soap(p) => p.reads_metadata(),
            Processor::Openapi(p) => p.reads_metadata(),
            Processor::Sql(p) => p.reads_metadata(),
            Processor::Switch(p) => p.reads_metadata(),
            // `catch` programs read `%error`, which the flow sets: metadata must exist.
            Processor::Try(p) => p.reads_metadata(),
            Processor::Catch(_) => true,
            Processor::Split(p) => p.path.reads_metadata(),
            Processor::Aggregate(p) => p.reads_metadata(),
            Processor::Enrich(p) => p.reads_metadata(),
            Processor::Throttle(p) => p.key.as_ref().is_some_and(Mapping::reads_metadata),
            Processor::Delay(p) => p.reads_metadata(),
            // The template may use `meta`.
            Processor::Template(_) => true,
        }
    }
}

/// Compiles the `result` program of a step that calls an API.
fn compile_result(source: Option<&str>, errors: &mut Vec<BuildError>) -> Option<Mapping> {
    source.and_then(|r| {
        Mapping::compile(r)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("result", d)))
            .ok()
    })
}

/// Merges an API's answer into the message: `result` runs with the answer in `%response`
/// (which is gone afterwards); without a `result`, `main` (the answer's payload) becomes the
/// message.
fn merge_answer(
    result: Option<&Mapping>,
    mut message: Message,
    response: Value,
    main: Value,
) -> Result<Option<Message>, StepError> {
    let Some(result) = result else {
        message.value = main;
        return Ok(Some(message));
    };
    // A `%response` of the message's own is set aside while the answer takes its place.
    let own = match &mut message.metadata {
        Value::Object(meta) => meta.remove("response"),
        _ => None,
    };
    insert(&mut message.metadata, "response", response);
    let outcome = result.run(&mut message.value, &mut message.metadata);
    if let Value::Object(meta) = &mut message.metadata {
        meta.remove("response");
        if let Some(own) = own {
            meta.insert("response".into(), own);
        }
    }
    match outcome? {
        Outcome::Done(_) => Ok(Some(message)),
        Outcome::Aborted => Ok(None),
    }
}

/// The longest a pipeline step may retry in place: a durable delivery worker holds its message
/// meanwhile, well inside its lease.
const MAX_IN_PLACE: std::time::Duration = std::time::Duration::from_secs(300);

/// The retry policy of a step that calls an API, refusing one that could outlast a lease.
fn in_place_policy(
    config: &crate::core::retry::RetryConfig,
    errors: &mut Vec<BuildError>,
) -> Option<crate::core::retry::RetryPolicy> {
    if config.max_elapsed().is_some_and(|e| e > MAX_IN_PLACE) {
        errors.push(BuildError::new(
            "retry.max_elapsed",
            format!(
                "a pipeline step retries in place for at most {MAX_IN_PLACE:?}; let the output retry longer"
            ),
        ));
        return None;
    }
    // A step retries in place while the message waits, whatever the flow's delivery mode.
    Some(config.policy(false))
}

/// What every step that calls an API has besides its call: in-place retries and `result`.
struct ApiStep<C> {
    call: C,
    retry: crate::core::retry::RetryPolicy,
    result: Option<Mapping>,
}

impl<C> ApiStep<C> {
    /// Puts a built call together with its retry policy and `result`, collecting every error.
    fn build(
        call: Result<C, Vec<BuildError>>,
        retry: &crate::core::retry::RetryConfig,
        result: Option<&str>,
    ) -> Result<ApiStep<C>, Vec<BuildError>> {
        let mut errors = Vec::new();
        let call = call.map_err(|e| errors.extend(e)).ok();
        let result = compile_result(result, &mut errors);
        let retry = in_place_policy(retry, &mut errors);
        match (call, retry) {
            (Some(call), Some(retry)) if errors.is_empty() => Ok(ApiStep {
                call,
                retry,
                result,
            }),
            _ => Err(errors),
        }
    }

    fn result_reads_metadata(&self) -> bool {
        self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    /// What `call` answers, retried in place as the step's policy says.
    async fn ask<T, F, Fut>(&self, call: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::core::Attempt>>,
    {
        Ok(crate::core::retry::in_place(&self.retry, call)
            .await
            .map_err(crate::core::MappingError)?)
    }

    /// The answer merged into `message` by `result` (see [`merge_answer`]).
    fn merge(
        &self,
        message: Message,
        response: Value,
        main: Value,
    ) -> Result<Option<Message>, StepError> {
        merge_answer(self.result.as_ref(), message, response, main)
    }
}
