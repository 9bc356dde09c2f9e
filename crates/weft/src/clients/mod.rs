//! Client code per external system, shared by every input and output that talks to it, so an
//! input and an output of one system never duplicate connection handling. `resources:` in the
//! config holds what components share by name: auth profiles, rate limits, circuit breakers,
//! SQL databases and caches.
//! OAuth 2.0 tokens (and rotated refresh tokens) are kept in the store when the engine has one,
//! so a restart neither fetches a token it still holds nor loses the refresh token it was last
//! given; a profile with a refresh-token grant makes the engine open the store.

pub mod amqp;
pub mod auth;
pub mod cache;
pub mod call;
pub mod circuit;
pub mod graphql;
pub mod http;
pub mod json_schema;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod openapi;
pub mod outbound;
pub mod pg_replication;
pub mod rate_limit;
pub mod redis;
pub mod request;
pub mod s3;
pub mod sftp;
pub mod sign;
pub mod soap;
pub mod sql;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use auth::AuthProfile;
use circuit::Breaker;
use rate_limit::RateLimit;

/// What every component shares whether or not the config names it: one HTTP connection pool
/// for the whole process.
#[derive(Clone, Default)]
pub struct Shared {
    pub http: http::HttpClient,
}

/// Built resources, by name.
#[derive(Clone, Default)]
pub struct Resources {
    pub auth: HashMap<String, Arc<AuthProfile>>,
    pub rate_limits: HashMap<String, RateLimit>,
    pub circuit_breakers: HashMap<String, Breaker>,
    pub sql: HashMap<String, Arc<sql::Database>>,
    pub caches: HashMap<String, cache::Cache>,
}

fn unknown<T>(what: &str, section: &str, name: &str, known: &HashMap<String, T>) -> String {
    let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        format!("no {what} `{name}`: `resources.{section}` defines none")
    } else {
        format!(
            "no {what} `{name}` in `resources.{section}` (defined: {})",
            names.join(", ")
        )
    }
}

impl Resources {
    /// Whether a resource keeps state across restarts (a rotating OAuth 2.0 refresh token).
    pub fn wants_store(&self) -> bool {
        self.auth.values().any(|a| a.wants_store())
    }

    /// Hands the engine's store to the resources that keep state in it.
    pub fn attach_store(&self, store: &weft_store::Store) {
        for profile in self.auth.values() {
            profile.attach_store(store);
        }
    }

    pub fn auth(&self, name: &str) -> Result<Arc<AuthProfile>, String> {
        self.auth
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("auth profile", "auth", name, &self.auth))
    }

    pub fn cache(&self, name: &str) -> Result<cache::Cache, String> {
        self.caches
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("cache", "caches", name, &self.caches))
    }

    pub fn sql(&self, name: &str) -> Result<Arc<sql::Database>, String> {
        self.sql
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("database", "sql", name, &self.sql))
    }

    pub fn circuit_breaker(&self, name: &str) -> Result<Breaker, String> {
        self.circuit_breakers.get(name).cloned().ok_or_else(|| {
            unknown(
                "circuit breaker",
                "circuit_breakers",
                name,
                &self.circuit_breakers,
            )
        })
    }

    pub fn rate_limit(&self, name: &str) -> Result<RateLimit, String> {
        self.rate_limits
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("rate limit", "rate_limits", name, &self.rate_limits))
    }
}
