//! `openapi`: calls one operation of an OpenAPI 3.0/3.1 document per message, by its
//! `operationId`. Parameters (path, query, header) are taken from the message by name — or from
//! the object `parameters` makes — and the JSON body is the message, or what `body` makes. Both
//! are validated against the document's schemas first: a message that does not match fails at
//! once, with every problem named, and nothing is sent. The document's security schemes are
//! mapped onto auth profiles with `security` (a requirement naming several schemes sends all of
//! their credentials); `validate_response: true` checks a 2xx JSON answer against the document
//! too. Parameters are written as their `style` and `explode` say (`form`, `spaceDelimited`,
//! `pipeDelimited`, `deepObject` in queries; `simple`, `label`, `matrix` in paths), and the
//! document's server URL takes its `{variables}` from `server_variables` or their defaults.
//! The `openapi` processor takes the same settings plus `result`, a
//! VRL program that merges the answer (`%response.status`, `%response.body`) into the message.
//! `weft openapi list FILE` shows the operations.
//!
//! ```yaml
//! output:
//!   openapi:
//!     spec: ./crm.openapi.yaml
//!     operation: createContact
//!     parameters: '{ "team": .team_id }'   # default: the message's fields by name
//!     body: .contact                       # default: the message
//!     security: { bearerAuth: crm }        # scheme in the document → resources.auth profile
//!     server_variables: { region: eu }     # `{region}` in the document's server URL
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::openapi::call::{OpenApiCall, openapi_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

openapi_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "OpenapiOutput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl super::Spec for Config {
    type Built = OpenApiOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<OpenApiOutput, Vec<BuildError>> {
        let client = &shared.http;
        OpenApiCall::build(client, resources, self.openapi()).map(OpenApiOutput)
    }
}

pub struct OpenApiOutput(OpenApiCall);

impl crate::core::Output for OpenApiOutput {
    async fn send(&self, message: &Message) -> Attempt {
        match self.0.call(message).await {
            Ok(_) => Attempt::Delivered,
            Err(failed) => failed,
        }
    }

    fn reads_metadata(&self) -> bool {
        self.0.reads_metadata()
    }
}
