//! Processors: the steps of a flow's `pipeline`. One file per processor; `registry!` below
//! lists them, one line each, and writes the enums and matches; [`Spec`] is what each
//! processor's `Config` provides. `switch`, `try`, `catch` and `enrich` hold
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
mod validate;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::flow::ProcessorSlot;
use crate::core::mapping::{Mapping, Outcome, insert};
use crate::core::{Context, Message, Now, Step, StepError, Value};

/// What the registry asks of a processor's config struct (`Config` in the processor's file).
pub trait Spec {
    /// The built processor.
    type Built: crate::core::Processor;

    /// Compiles what can be compiled and checks what can be checked without running.
    fn build(&self, shared: &Shared, resources: &Resources)
    -> Result<Self::Built, Vec<BuildError>>;

    /// The step lists a built processor holds (`switch`, `try`, `catch`, `enrich`), looked
    /// into to find a `dedupe` or an `aggregate` wherever it sits.
    fn nested(_built: &Self::Built) -> Vec<Nested<'_>> {
        Vec::new()
    }
}

/// A list of steps inside a step, and what takes a message into it (`case 0: .kind == "a"`,
/// `on failure`).
pub struct Nested<'a> {
    pub label: String,
    pub steps: &'a [ProcessorSlot<Processor>],
}

impl<'a> Nested<'a> {
    fn new(label: impl Into<String>, steps: &'a [ProcessorSlot<Processor>]) -> Self {
        Nested {
            label: label.into(),
            steps,
        }
    }
}

/// Writes the registry from one line per processor (`"yaml_name" => Variant(config type)`,
/// with the variant's serde attributes above it where it has a short form): the config and
/// built enums and every match over them. The `mod` lines stay outside the macro: rustfmt
/// does not follow a module declared inside one.
macro_rules! registry {
    ($($(#[$attr:meta])* $name:literal => $variant:ident($config:ty)),* $(,)?) => {
        /// Every processor weft knows, by its YAML name.
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ProcessorConfig {
            $($(#[$attr])* $variant(Box<$config>),)*
        }

        /// The YAML names, in the registry's order.
        pub const NAMES: &[&str] = &[$($name),*];

        impl ProcessorConfig {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(ProcessorConfig::$variant(_) => $name,)*
                }
            }

            pub fn build(
                &self,
                shared: &Shared,
                resources: &Resources,
            ) -> Result<Processor, Vec<BuildError>> {
                Ok(match self {
                    $(ProcessorConfig::$variant(c) => {
                        Processor::$variant(Box::new(Spec::build(&**c, shared, resources)?))
                    })*
                })
            }
        }

        /// A built processor.
        pub enum Processor {
            $($variant(Box<<$config as Spec>::Built>),)*
        }

        impl Processor {
            /// The step lists it holds.
            pub fn nested(&self) -> Vec<Nested<'_>> {
                match self {
                    $(Processor::$variant(p) => <$config as Spec>::nested(p),)*
                }
            }
        }

        impl crate::core::Processor for Processor {
            async fn process(
                &self,
                message: Message,
                cx: &mut Context<'_>,
            ) -> Result<Step, StepError> {
                // The flow calls this only after `process_now` handed the message back, so
                // the step is not asked in place again (an `aggregate` would look its group up
                // twice). A step that waits has its future on the heap: the largest (an HTTP
                // call's) would otherwise set the size of every step's future, and of the
                // pipeline's, which is boxed per message (that copy was 44 % of the
                // instructions of the `map` benchmark).
                match self {
                    $(Processor::$variant(p) => {
                        Box::pin(crate::core::Processor::process(&**p, message, cx)).await
                    })*
                }
            }

            fn process_now(&self, message: Message, cx: &mut Context<'_>) -> Now {
                match self {
                    $(Processor::$variant(p) => {
                        crate::core::Processor::process_now(&**p, message, cx)
                    })*
                }
            }

            fn reads_metadata(&self) -> bool {
                match self {
                    $(Processor::$variant(p) => crate::core::Processor::reads_metadata(&**p),)*
                }
            }

            fn catches(&self) -> bool {
                match self {
                    $(Processor::$variant(p) => crate::core::Processor::catches(&**p),)*
                }
            }
        }
    };
}

registry! {
    "map" => Map(map::Config),
    "filter" => Filter(filter::Config),
    "log" => Log(log::Config),
    "dedupe" => Dedupe(dedupe::Config),
    "http" => Http(http::Config),
    "graphql" => Graphql(graphql::Config),
    "soap" => Soap(soap::Config),
    "openapi" => Openapi(openapi::Config),
    "sql" => Sql(sql::Config),
    "switch" => Switch(switch::Config),
    "try" => Try(catch::TryConfig),
    "catch" => Catch(catch::CatchConfig),
    #[serde(deserialize_with = "split::Config::deserialize_short")]
    #[schemars(with = "crate::config::schema_types::ShortOr<split::Config>")]
    "split" => Split(split::Config),
    "aggregate" => Aggregate(aggregate::Config),
    "enrich" => Enrich(enrich::Config),
    "throttle" => Throttle(throttle::Config),
    #[serde(deserialize_with = "delay::Config::deserialize_short")]
    #[schemars(with = "crate::config::schema_types::ShortOr<delay::Config>")]
    "delay" => Delay(delay::Config),
    "template" => Template(template::Config),
    "validate" => Validate(validate::Config),
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
        test(self)
            || self
                .nested()
                .into_iter()
                .any(|list| list.steps.iter().any(|s| s.processor.any(test)))
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
        // One spelling for a step, in `weft check` and at run time (`%error.component`).
        let at = format!("{path}[{i}].{kind}");
        match config.build(shared, resources) {
            Ok(processor) => steps.push(ProcessorSlot::new(at.clone(), processor)),
            Err(errs) => errors.extend(errs.into_iter().map(|mut e| {
                e.field = crate::core::step_path(&at, &e.field);
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
        Ok(crate::core::retry::in_place(&self.retry, call).await?)
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
