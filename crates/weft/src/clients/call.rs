//! The settings of an HTTP call, declared once for every component that calls an API
//! (`http_client`, the `http` processor, `graphql`, `soap` and `openapi` both ways, `http_poll`).
//!
//! [`call_config!`] writes a component's config struct: the component's own fields first, then
//! the ones it asks for by name (`method`, `format`, `auth`, `retry`, `result`, and `s3`'s
//! bucket and credentials), then the settings every call has
//! (`headers`, `timeout`, `rate_limit`, `circuit_breaker`, `client`). The fields are pasted
//! into the struct rather than nested with serde's `flatten`, which would lose what the loader
//! gives every other field: the refusal of unknown keys with a "did you mean", errors located
//! at `file:line:col`, and one closed object in the JSON Schema. The struct gets
//! `fn call(&self) -> CallSettings<'_>`, the shared part as `clients::request` takes it.
//!
//! A component module using it defines `fn default_timeout() -> Dur` (and, with `method`,
//! `fn default_method() -> String`): the defaults are its own.

use std::collections::BTreeMap;
use std::time::Duration;

use super::http::ClientConfig;

/// The settings every call has, borrowed from a component's config.
#[derive(Clone, Copy)]
pub struct CallSettings<'a> {
    pub headers: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    pub rate_limit: Option<&'a str>,
    pub circuit_breaker: Option<&'a str>,
    /// How to connect; the shared client unless it asks for something of its own.
    pub client: &'a ClientConfig,
}

/// Declares a component's config struct with the shared call settings; see the module doc.
///
/// ```ignore
/// call_config! {
///     #[derive(Debug, Deserialize, schemars::JsonSchema)]
///     #[schemars(rename = "HttpClientOutput")]
///     #[serde(deny_unknown_fields)]
///     pub struct Config {
///         /// Destination; may contain `{{ expression }}` parts.
///         pub url: String,
///     }
///     with { auth, retry }
/// }
/// ```
macro_rules! call_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($own:tt)* }
        with { $($flag:ident),* $(,)? }
    ) => {
        $crate::clients::call::call_config!(@fields [$(#[$meta])*] $name [$($own)*] [$($flag)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [auth $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// An auth profile from `resources.auth`: how every call proves who is calling.
            /// Credentials go only to the host the `url` names.
            #[serde(default)]
            pub auth: Option<String>,
        ] [$($rest)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [method $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// The HTTP method.
            #[serde(default = "default_method")]
            pub method: String,
        ] [$($rest)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [format $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// How the message is written as the body: `json`, `form`, `multipart`, `xml`,
            /// `csv` or `text`; by default as a `Content-Type` header given here says, else
            /// JSON (a string message as its raw text).
            #[serde(default)]
            pub format: Option<$crate::core::body::Format>,
        ] [$($rest)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [retry $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// When and how often a failed call is tried again: attempts, backoff, how long in
            /// all (the flows guide has the defaults).
            #[serde(default)]
            pub retry: $crate::core::retry::RetryConfig,
        ] [$($rest)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [s3 $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// The bucket.
            pub bucket: String,
            /// The bucket's region. Default `us-east-1`.
            #[serde(default)]
            pub region: Option<String>,
            /// An S3-compatible server (`http://127.0.0.1:9000`); default AWS
            /// (`https://s3.<region>.amazonaws.com`).
            #[serde(default)]
            pub endpoint: Option<String>,
            /// The bucket in the path (`endpoint/bucket/key`) rather than the host name.
            /// Default: yes with `endpoint`, no on AWS.
            #[serde(default)]
            pub path_style: Option<bool>,
            /// Access key; default the `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
            /// `AWS_SESSION_TOKEN` variables.
            #[serde(default)]
            pub credentials: Option<$crate::clients::s3::S3Credentials>,
        ] [$($rest)*]);
    };
    (@fields $meta:tt $name:ident [$($acc:tt)*] [result $($rest:ident)*]) => {
        $crate::clients::call::call_config!(@fields $meta $name [$($acc)*
            /// A VRL program merging the answer, which it finds in `%response`, into the
            /// message; without it the answer's payload becomes the message.
            #[serde(default)]
            pub result: Option<String>,
        ] [$($rest)*]);
    };
    (@fields [$($meta:tt)*] $name:ident [$($acc:tt)*] []) => {
        $($meta)*
        pub struct $name {
            $($acc)*
            /// Request headers; values may contain `{{ expression }}` parts.
            #[serde(default)]
            pub headers: std::collections::BTreeMap<String, String>,
            /// Time for one call, from connecting to the last byte of the answer.
            #[serde(default = "default_timeout")]
            pub timeout: $crate::config::units::Dur,
            /// A rate limit from `resources.rate_limits`, shared with every component that
            /// names it.
            #[serde(default)]
            pub rate_limit: Option<String>,
            /// A circuit breaker from `resources.circuit_breakers`: after repeated failures,
            /// calls stop for a while instead of piling onto a failing API.
            #[serde(default)]
            pub circuit_breaker: Option<String>,
            /// How to connect: CA file, client certificate (mTLS), lowest TLS version, proxy,
            /// timeouts, pool.
            #[serde(default)]
            pub client: $crate::clients::http::ClientConfig,
        }

        impl $name {
            /// The settings every call has.
            pub fn call(&self) -> $crate::clients::call::CallSettings<'_> {
                $crate::clients::call::CallSettings {
                    headers: &self.headers,
                    timeout: self.timeout.0,
                    rate_limit: self.rate_limit.as_deref(),
                    circuit_breaker: self.circuit_breaker.as_deref(),
                    client: &self.client,
                }
            }
        }
    };
}

pub(crate) use call_config;
