//! Config files → built flows, collecting every error on the way.
//!
//! The stages: YAML text → [`yaml::Node`] tree with locations → `${VAR}` substitution in the
//! tree → each component deserialized on its own (so one bad component does not hide the next)
//! → each component built (VRL compiled, URLs and methods parsed). Components say only *what* is
//! wrong and in which field ([`BuildError`]); this module adds *where* (`file:line:col`, flow,
//! component, field path) and a "did you mean". `weft check` is this module and nothing else.

#[cfg(test)]
mod component_docs;
pub mod schema;
mod shape;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::level_filters::LevelFilter;

use crate::clients::{self, Resources, Shared};
use crate::config::de::{self, from_node};
use crate::config::yaml::{self, Kind, Loc, Node, Style};
use crate::config::{BuildError, ConfigError, env};
use crate::core::durable::Limits;
use crate::core::mapping::Mapping;
use crate::core::retry::RetryPolicy;
use crate::inputs::{Input, InputConfig};
use crate::outputs::{Output, OutputConfig};
use crate::processors::{Processor, ProcessorConfig};
pub use weft_store::Durability;

/// A flow of weft's own components, as the engine runs it.
pub type RunFlow = crate::core::flow::Flow<Processor, Output>;

/// A flow, built and ready to run.
pub struct FlowSpec {
    pub name: String,
    pub concurrency: u32,
    pub input_id: String,
    pub input: Input,
    pub processors: Vec<(String, Processor)>,
    pub outputs: Vec<(String, Output, RetryPolicy)>,
    /// `None` for direct delivery; the store queue's bounds for `delivery: durable`.
    pub durable: Option<Limits>,
    /// `ordering: { by_key: … }`: the key whose messages are delivered one at a time, in order.
    pub order_by: Option<Mapping>,
    /// `ordering.partitions`: on a cluster, the partitions the keys are spread over.
    pub order_partitions: u32,
    /// `log_level`: the level of the log lines written while its messages are handled.
    pub log_level: Option<LevelFilter>,
    /// The flow's settings (after `${…}` substitution), as [`yaml::Node::canonical`] writes
    /// them: a reload restarts the flow only when this, or [`Loaded::shared`], changed.
    pub fingerprint: String,
    /// The flow's settings as YAML, after `${…}` substitution, every credential `[redacted]`
    /// ([`crate::config::secret::shown`]): what the dashboard shows.
    pub effective: String,
}

impl FlowSpec {
    /// Whether the flow keeps anything in the store (its queue, dedupe keys, idempotency keys).
    pub fn needs_store(&self) -> bool {
        self.durable.is_some()
            || self.processors.iter().any(|(_, p)| p.uses_store())
            || self.input.uses_store()
    }
}

/// What flows sharing an `http_server` address must agree on.
type ListenerSettings = (Option<crate::server::tls::TlsConfig>, crate::server::Limits);

/// Everything `weft run` needs.
pub struct Loaded {
    pub flows: Vec<FlowSpec>,
    pub admin_address: Option<std::net::SocketAddr>,
    /// `admin.token`: the bearer token the admin endpoint asks for.
    pub admin_token: Option<crate::config::Secret>,
    /// `admin.tls`, its files read.
    pub admin_tls: Option<std::sync::Arc<crate::server::tls::Tls>>,
    /// `admin.hosts`.
    pub admin_hosts: Vec<String>,
    /// `admin.ui.actions`: whether a dashboard session may change things.
    pub admin_ui_actions: bool,
    /// `admin.ui.history`: delivered messages each flow remembers.
    pub admin_history: u32,
    pub shutdown_timeout: Duration,
    pub durability: Durability,
    /// `disk_free_limit`: the store's floor of free space (`None`: its default).
    pub disk_free_limit: Option<u64>,
    pub resources: Resources,
    /// What every flow depends on (`resources`, `outbound`), as [`yaml::Node::canonical`]
    /// writes it: when it changed, a reload restarts every flow.
    pub shared: String,
    /// `tracing:`: span export.
    pub tracing: crate::telemetry::TracingConfig,
    /// `cluster:`: the NATS server this node shares with the others.
    pub cluster: Option<crate::cluster::Settings>,
    /// The `resources` sections, canonical: a reload keeps the built resources when it is the
    /// same ([`load_reusing`]).
    pub resources_text: String,
}

const DEFAULT_MAX_QUEUED: u64 = 100_000;
const DEFAULT_MAX_QUEUED_BYTES: u64 = 256 << 20;
const DEFAULT_CONCURRENCY: u32 = 256;
const DEFAULT_WORKERS: u32 = 16;
/// `ordering.partitions` when not given.
const DEFAULT_PARTITIONS: u32 = 16;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads and builds every flow in `paths`, or returns every error found.
pub fn load(paths: &[impl AsRef<Path>], shared: &Shared) -> Result<Loaded, Vec<ConfigError>> {
    load_with(paths, &|name: &str| std::env::var(name).ok(), shared)
}

/// [`load`] with `${VAR}` looked up through `lookup` (`weft test` adds a test file's `env`).
pub fn load_with(
    paths: &[impl AsRef<Path>],
    lookup: &dyn Fn(&str) -> Option<String>,
    shared: &Shared,
) -> Result<Loaded, Vec<ConfigError>> {
    load_reusing(paths, lookup, shared, None)
}

/// [`load_with`] for a reload: when `resources` read exactly as they did in `previous`, its
/// built resources are kept — one rate limit, breaker, cache, pool and OAuth 2.0 token for
/// old and new flows alike — instead of being built again.
pub fn load_reusing(
    paths: &[impl AsRef<Path>],
    lookup: &dyn Fn(&str) -> Option<String>,
    shared: &Shared,
    previous: Option<(&str, &Resources)>,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut loader = Loader::new(shared);
    let mut texts = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((file, text)),
            Err(e) => loader.errors.push(ConfigError {
                file,
                loc: Loc { line: 0, col: 0 },
                flow: None,
                component: None,
                field: String::new(),
                message: format!("cannot read: {e}"),
                suggestion: None,
            }),
        }
    }
    // Resources first, from every file: a flow may name one defined in another file.
    let mut resources_text = String::new();
    for (_, text) in &texts {
        if let Ok(mut root) = yaml::parse(text) {
            let _ = env::substitute(&mut root, lookup);
            // `outbound` too: resources hold HTTP clients (token fetches) under its rules.
            for key in ["resources", "outbound"] {
                if let Some(node) = root.get(key) {
                    resources_text.push_str(key);
                    resources_text.push_str(&node.canonical());
                    resources_text.push('\n');
                }
            }
        }
    }
    match previous.filter(|(text, _)| *text == resources_text) {
        Some((_, resources)) => loader.resources = resources.clone(),
        None => {
            for (file, text) in &texts {
                loader.resources(file, text, lookup);
            }
        }
    }
    loader.resources_text = resources_text;
    for (file, text) in &texts {
        loader.file(file, text, lookup);
    }
    loader.finish()
}

/// Loads one config text (for tests and embedding); `name` stands in for the file name.
pub fn load_str(
    name: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    shared: &Shared,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut loader = Loader::new(shared);
    loader.resources(name, text, lookup);
    loader.file(name, text, lookup);
    loader.finish()
}

struct Loader<'a> {
    errors: Vec<ConfigError>,
    flows: Vec<FlowSpec>,
    admin_address: Option<std::net::SocketAddr>,
    admin_token: Option<crate::config::Secret>,
    admin_tls: Option<std::sync::Arc<crate::server::tls::Tls>>,
    admin_hosts: Vec<String>,
    admin_ui_actions: bool,
    admin_history: u32,
    /// Each built flow's settings, as `flows` holds them, for [`FlowSpec::effective`].
    flow_nodes: Vec<Node>,
    /// The top-level keys one file may set (`admin`, `outbound`, `tracing`) set so far.
    set_once: std::collections::HashSet<String>,
    shutdown_timeout: Option<Duration>,
    durability: Option<Durability>,
    disk_free_limit: Option<u64>,
    seen_flows: HashMap<String, String>,
    /// Per address: the routes served so far (path, methods, flow).
    endpoints: HashMap<std::net::SocketAddr, Vec<(String, Vec<http::Method>, String)>>,
    /// Per address: the first flow on it, and its TLS and limits (which every flow there shares).
    listeners: HashMap<std::net::SocketAddr, (String, ListenerSettings)>,
    shared: &'a Shared,
    resources: Resources,
    /// What every flow depends on, canonical (see [`Loaded::shared`]).
    shared_settings: String,
    tracing: Option<crate::telemetry::TracingConfig>,
    resources_text: String,
    cluster: Option<crate::cluster::Settings>,
}

/// Error context within one file.
struct Ctx<'t> {
    file: &'t str,
    text: &'t str,
    flow: Option<String>,
    component: Option<String>,
}

impl Ctx<'_> {
    fn error(&self, loc: Loc, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            loc,
            flow: self.flow.clone(),
            component: self.component.clone(),
            field: field.to_string(),
            message: message.into(),
            suggestion: None,
        }
    }

    fn de_error(&self, e: de::DeError, skip_variant: bool) -> ConfigError {
        let path = if skip_variant && !e.path.is_empty() {
            &e.path[1..]
        } else {
            &e.path[..]
        };
        let mut err = self.error(e.loc.unwrap_or_default(), &join_path(path), e.message);
        err.suggestion = e.suggestion;
        err
    }

    /// Locates each build error in the component's settings node.
    fn build_errors(&self, settings: &Node, errors: Vec<BuildError>) -> Vec<ConfigError> {
        errors
            .into_iter()
            .map(|e| {
                let node = find(settings, &e.field).unwrap_or(settings);
                let loc = match &e.span {
                    Some(span) => locate_in_scalar(self.text, node, span.start),
                    None => node.loc,
                };
                self.error(loc, &e.field, e.message)
            })
            .collect()
    }
}

fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path.iter().filter(|seg| !seg.is_empty()) {
        if !seg.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

/// Walks a field path (`headers.Authorization`, `methods.0`, `[0].processors[1].map`) from
/// `node`.
fn find<'n>(node: &'n Node, field: &str) -> Option<&'n Node> {
    if field.is_empty() {
        return Some(node);
    }
    let mut segments = Vec::new();
    for piece in field.split('.') {
        let mut rest = piece;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segments.push(&rest[..open]);
            }
            rest = &rest[open..];
            while let Some(inner) = rest.strip_prefix('[') {
                let close = inner.find(']')?;
                segments.push(&inner[..close]);
                rest = &inner[close + 1..];
            }
        }
        if !rest.is_empty() {
            segments.push(rest);
        }
    }
    let mut current = node;
    for seg in segments {
        current = match &current.kind {
            Kind::Map(_) => current.get(seg)?,
            Kind::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Maps a byte offset inside a scalar's value back to `line:col` in the file.
fn locate_in_scalar(text: &str, node: &Node, offset: usize) -> Loc {
    let Kind::Str(value) = &node.kind else {
        return node.loc;
    };
    // An error at the very end ("unexpected end of program") belongs on the last line written.
    let mut offset = offset.min(value.len());
    while offset > 0 && offset == value.len() && value[..offset].ends_with('\n') {
        offset -= 1;
    }
    let before = &value[..offset];
    let line_in_value = before.matches('\n').count() as u32;
    let col_in_line = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32;
    match node.style {
        Style::Block => {
            // The parser places a block scalar at its first content line; columns count from
            // the block's indentation.
            let first_content_line = node.loc.line;
            let indent = text
                .lines()
                .skip(first_content_line as usize - 1)
                .find(|l| !l.trim().is_empty())
                .map_or(0, |l| l.len() - l.trim_start().len()) as u32;
            Loc {
                line: first_content_line + line_in_value,
                col: indent + col_in_line + 1,
            }
        }
        Style::Quoted if line_in_value == 0 => Loc {
            line: node.loc.line,
            col: node.loc.col + 1 + col_in_line,
        },
        Style::Plain if line_in_value == 0 => Loc {
            line: node.loc.line,
            col: node.loc.col + col_in_line,
        },
        _ => Loc {
            line: node.loc.line + line_in_value,
            col: node.loc.col,
        },
    }
}

/// The name of a single-key component node, for messages about it.
fn component_kind(node: &Node) -> String {
    match &node.kind {
        Kind::Map(entries) if entries.len() == 1 => match &entries[0].0.kind {
            Kind::Str(s) => s.clone(),
            _ => "?".into(),
        },
        Kind::Str(s) => s.clone(),
        _ => "?".into(),
    }
}

/// The settings node of a single-key component node (`http_server: {…}` → `{…}`).
fn settings(node: &Node) -> &Node {
    match &node.kind {
        Kind::Map(entries) if entries.len() == 1 => &entries[0].1,
        _ => node,
    }
}

impl<'a> Loader<'a> {
    fn new(shared: &'a Shared) -> Self {
        Loader {
            errors: Vec::new(),
            flows: Vec::new(),
            admin_address: None,
            admin_token: None,
            admin_tls: None,
            admin_hosts: Vec::new(),
            admin_ui_actions: true,
            admin_history: 0,
            flow_nodes: Vec::new(),
            set_once: Default::default(),
            shutdown_timeout: None,
            durability: None,
            disk_free_limit: None,
            seen_flows: HashMap::new(),
            endpoints: HashMap::new(),
            listeners: HashMap::new(),
            shared,
            resources: Resources::default(),
            shared_settings: String::new(),
            tracing: None,
            resources_text: String::new(),
            cluster: None,
        }
    }

    fn finish(mut self) -> Result<Loaded, Vec<ConfigError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        for (spec, node) in self.flows.iter_mut().zip(&self.flow_nodes) {
            spec.effective = node.to_yaml(&|key, value| match crate::config::secret::shown(
                key, value,
            ) {
                std::borrow::Cow::Borrowed(same) if same == value => None,
                hidden => Some(hidden.into_owned()),
            });
        }
        Ok(Loaded {
            flows: self.flows,
            admin_address: self.admin_address,
            admin_token: self.admin_token,
            admin_tls: self.admin_tls,
            admin_hosts: self.admin_hosts,
            admin_ui_actions: self.admin_ui_actions,
            admin_history: self.admin_history,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            durability: self.durability.unwrap_or_default(),
            disk_free_limit: self.disk_free_limit,
            resources: self.resources,
            shared: self.shared_settings,
            tracing: self.tracing.unwrap_or_default(),
            resources_text: self.resources_text,
            cluster: self.cluster,
        })
    }

    fn file(&mut self, file: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) {
        let mut ctx = Ctx {
            file,
            text,
            flow: None,
            component: None,
        };
        let mut root = match yaml::parse(text) {
            Ok(root) => root,
            Err(e) => {
                self.errors
                    .push(ctx.error(e.loc, "", format!("YAML syntax: {}", e.message)));
                return;
            }
        };
        let unset = env::substitute(&mut root, lookup);
        let unset_at: Vec<Loc> = unset.iter().map(|e| e.loc).collect();
        for e in unset {
            // `annotate_env_errors` adds the flow and component once the tree has been walked.
            self.errors.push(ctx.error(e.loc, "", e.message));
        }
        let env_errors = self.errors.len();
        if !matches!(root.kind, Kind::Map(_)) {
            self.errors.push(ctx.error(
                root.loc,
                "",
                "a config file is a mapping with a `flows:` key",
            ));
            return;
        }
        // `resources` are built by [`Loader::resources`], before any flow.
        for key in ["resources", "outbound"] {
            if let Some(value) = root.get(key) {
                let line = format!("{key}:{}\n", value.canonical());
                self.shared_settings.push_str(&line);
            }
        }
        match from_node::<shape::File>(&root) {
            Ok(shape) => self.top_level(&ctx, &root, shape),
            Err(e) => self.errors.push(ctx.de_error(e, false)),
        }
        match root.get("flows") {
            Some(flows) => self.flows_node(&mut ctx, flows),
            None => self.errors.push(ctx.error(
                root.loc,
                "flows",
                "no `flows:` key; a config file defines its flows under `flows:`",
            )),
        }
        // A value whose variable is unset is empty: what its field then says of it (an empty
        // secret, a URL without a host) is that same error again.
        if !unset_at.is_empty() {
            let mut i = 0;
            self.errors.retain(|e| {
                i += 1;
                i <= env_errors || !(e.file == file && unset_at.contains(&e.loc))
            });
        }
        // Reference env errors to flows: re-walk is cheap and keeps substitution simple.
        annotate_env_errors(&mut self.errors, file, &root);
    }

    /// The file's settings besides its flows and resources.
    fn top_level(&mut self, ctx: &Ctx, root: &Node, shape: shape::File) {
        if let Some(admin) = shape.admin
            && self.first_to_set(ctx, root, "admin")
        {
            let value = root.get("admin").expect("deserialized from it");
            self.admin_token = admin.token;
            self.admin_hosts = admin.hosts;
            self.admin_ui_actions = admin.ui.as_ref().is_none_or(|ui| ui.actions);
            let history = admin.ui.as_ref().map_or(0, |ui| ui.history);
            if history > crate::core::history::MAX_KEPT {
                let at = find(value, "ui").unwrap_or(value);
                self.errors.push(ctx.error(
                    find(at, "history").unwrap_or(at).loc,
                    "admin.ui.history",
                    format!(
                        "at most {} delivered messages are kept per flow",
                        crate::core::history::MAX_KEPT
                    ),
                ));
            }
            self.admin_history = history;
            match admin.tls.as_ref().map(|t| t.load()) {
                None => {}
                Some(Ok(tls)) => self.admin_tls = Some(std::sync::Arc::new(tls)),
                Some(Err(errors)) => {
                    let at = find(value, "tls").unwrap_or(value);
                    for e in errors {
                        let field = e.field.trim_start_matches("tls.").to_string();
                        self.errors.push(ctx.error(
                            find(at, &field).unwrap_or(at).loc,
                            &format!("admin.{}", e.field),
                            e.message,
                        ));
                    }
                }
            }
            match admin.address.as_deref().map(str::parse) {
                None => {}
                Some(Ok(address)) => self.admin_address = Some(address),
                Some(Err(_)) => self.errors.push(ctx.error(
                    find(value, "address").unwrap_or(value).loc,
                    "admin.address",
                    format!(
                        "`{}` is not an `ip:port` address like 127.0.0.1:9464",
                        admin.address.as_deref().unwrap_or_default()
                    ),
                )),
            }
        }
        if let Some(cluster) = shape.cluster
            && self.first_to_set(ctx, root, "cluster")
        {
            let value = root.get("cluster").expect("deserialized from it");
            match cluster.settings() {
                Ok(settings) => self.cluster = Some(settings),
                Err((field, message)) => {
                    let at = match field.split_once('.') {
                        Some((outer, inner)) => find(value, outer).and_then(|n| find(n, inner)),
                        None => find(value, field),
                    };
                    self.errors.push(ctx.error(
                        at.unwrap_or(value).loc,
                        &format!("cluster.{field}"),
                        message,
                    ));
                }
            }
        }
        if let Some(tracing) = shape.tracing
            && self.first_to_set(ctx, root, "tracing")
        {
            self.tracing = Some(tracing);
        }
        if let Some(outbound) = shape.outbound
            && self.first_to_set(ctx, root, "outbound")
        {
            let value = root.get("outbound").expect("deserialized from it");
            match outbound.build() {
                Ok(rules) => self.shared.http.set_outbound(rules),
                Err(errors) => self.errors.extend(errors.into_iter().map(|e| {
                    let (list, index) = e.field.split_once('.').unwrap_or((&e.field, ""));
                    let at = find(value, list)
                        .and_then(|l| match (&l.kind, index.parse::<usize>()) {
                            (Kind::Seq(items), Ok(i)) => items.get(i),
                            _ => None,
                        })
                        .unwrap_or(value);
                    ctx.error(at.loc, &format!("outbound.{}", e.field), e.message)
                })),
            }
        }
        if let Some(durability) = shape.durability {
            self.durability = Some(durability.into());
        }
        if let Some(limit) = shape.disk_free_limit {
            self.disk_free_limit = Some(limit.0);
        }
        if let Some(timeout) = shape.shutdown_timeout {
            self.shutdown_timeout = Some(timeout.0);
        }
    }

    /// Whether this is the first file to set `key` (`admin`, `outbound`, `tracing`: one file
    /// sets each); if not, that is reported at the key.
    fn first_to_set(&mut self, ctx: &Ctx, root: &Node, key: &str) -> bool {
        if self.set_once.insert(key.to_string()) {
            return true;
        }
        let loc = match &root.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == key))
                .map_or(root.loc, |(k, _)| k.loc),
            _ => root.loc,
        };
        self.errors
            .push(ctx.error(loc, key, format!("`{key}` is set in more than one file")));
        false
    }

    /// Builds the `resources:` of one file. Variables are substituted as for flows; their
    /// errors are reported once, by [`Loader::file`].
    fn resources(&mut self, file: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) {
        let Ok(mut root) = yaml::parse(text) else {
            return;
        };
        let _ = env::substitute(&mut root, lookup);
        let Some(node) = root.get("resources") else {
            return;
        };
        let ctx = Ctx {
            file,
            text,
            flow: None,
            component: None,
        };
        if let Err(e) = from_node::<shape::Resources>(node) {
            let mut err = ctx.de_error(e, false);
            err.field = format!("resources.{}", err.field)
                .trim_end_matches('.')
                .to_string();
            self.errors.push(err);
            return;
        }
        let Kind::Map(kinds) = &node.kind else {
            return;
        };
        let shared = self.shared;
        for (kind, items) in kinds {
            let (Kind::Str(kind), Kind::Map(entries)) = (&kind.kind, &items.kind) else {
                continue;
            };
            for (name, item) in entries {
                let Kind::Str(name) = &name.kind else {
                    continue;
                };
                let ctx = Ctx {
                    file,
                    text,
                    flow: None,
                    component: Some(format!("resources.{kind}.{name}")),
                };
                let resources = &self.resources;
                let duplicate = match kind.as_str() {
                    "auth" => resources.auth.contains_key(name),
                    "rate_limits" => resources.rate_limits.contains_key(name),
                    "sql" => resources.sql.contains_key(name),
                    "caches" => resources.caches.contains_key(name),
                    _ => resources.circuit_breakers.contains_key(name),
                };
                if duplicate {
                    self.errors.push(ctx.error(
                        item.loc,
                        "",
                        format!("`{name}` is defined more than once in `resources.{kind}`"),
                    ));
                    continue;
                }
                let name = name.clone();
                match kind.as_str() {
                    "auth" => {
                        let built = self.resource(&ctx, item, |c: clients::auth::Config| {
                            c.build(&name, &shared.http)
                        });
                        if let Some(profile) = built {
                            self.resources.auth.insert(name, Arc::new(profile));
                        }
                    }
                    "sql" => {
                        let built =
                            self.resource(&ctx, item, |c: clients::sql::Config| c.build(&name));
                        if let Some(db) = built {
                            self.resources.sql.insert(name, Arc::new(db));
                        }
                    }
                    "caches" => {
                        let built =
                            self.resource(&ctx, item, |c: clients::cache::Config| c.build());
                        if let Some(cache) = built {
                            self.resources.caches.insert(name, cache);
                        }
                    }
                    "circuit_breakers" => {
                        let built =
                            self.resource(&ctx, item, |c: clients::circuit::Config| c.build(&name));
                        if let Some(breaker) = built {
                            self.resources.circuit_breakers.insert(name, breaker);
                        }
                    }
                    _ => {
                        let built =
                            self.resource(&ctx, item, |c: clients::rate_limit::Config| c.build());
                        if let Some(limit) = built {
                            self.resources.rate_limits.insert(name, limit);
                        }
                    }
                }
            }
        }
    }

    /// One resource definition, deserialized and built, or `None` with its errors reported.
    fn resource<C: for<'de> Deserialize<'de>, R>(
        &mut self,
        ctx: &Ctx,
        item: &Node,
        build: impl FnOnce(C) -> Result<R, Vec<BuildError>>,
    ) -> Option<R> {
        match from_node::<C>(item) {
            Ok(config) => build(config)
                .map_err(|errs| self.errors.extend(ctx.build_errors(item, errs)))
                .ok(),
            Err(e) => {
                self.errors.push(ctx.de_error(e, false));
                None
            }
        }
    }

    fn flows_node(&mut self, ctx: &mut Ctx, node: &Node) {
        let Kind::Map(flows) = &node.kind else {
            self.errors.push(ctx.error(
                node.loc,
                "flows",
                "`flows` is a mapping of flow names to flows",
            ));
            return;
        };
        for (key, flow) in flows {
            let Kind::Str(name) = &key.kind else {
                self.errors
                    .push(ctx.error(key.loc, "flows", "a flow name is a string"));
                continue;
            };
            ctx.flow = Some(name.clone());
            ctx.component = None;
            if let Some(first) = self.seen_flows.insert(name.clone(), ctx.file.to_string()) {
                self.errors.push(ctx.error(
                    key.loc,
                    "",
                    format!("a flow with this name is already defined in {first}"),
                ));
                continue;
            }
            if let Some(spec) = self.flow(ctx, name, flow) {
                self.flows.push(spec);
                self.flow_nodes.push(flow.clone());
            }
        }
        ctx.flow = None;
    }

    fn flow(&mut self, ctx: &mut Ctx, name: &str, node: &Node) -> Option<FlowSpec> {
        if !matches!(node.kind, Kind::Map(_)) {
            self.errors.push(ctx.error(
                node.loc,
                "",
                "a flow is a mapping with `input`, `pipeline` and `output`",
            ));
            return None;
        }
        let before = self.errors.len();
        // A flow whose own settings are wrong still has its components checked.
        let shape = from_node::<shape::Flow>(node).unwrap_or_else(|e| {
            self.errors.push(ctx.de_error(e, false));
            shape::Flow::default()
        });
        let durable = shape.delivery == shape::Delivery::Durable;
        let order_partitions = shape
            .ordering
            .as_ref()
            .and_then(|o| o.partitions)
            .unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=1024).contains(&order_partitions) {
            let at = find(node, "ordering")
                .and_then(|o| find(o, "partitions"))
                .unwrap_or(node);
            self.errors
                .push(ctx.error(at.loc, "ordering.partitions", "from 1 to 1024"));
        }
        let concurrency = match shape.concurrency {
            // Direct: messages in flight at once. Durable: delivery workers.
            None if durable => DEFAULT_WORKERS,
            None => DEFAULT_CONCURRENCY,
            Some(0) => {
                let at = find(node, "concurrency").unwrap_or(node);
                self.errors.push(ctx.error(
                    at.loc,
                    "concurrency",
                    "concurrency is a whole number above zero",
                ));
                DEFAULT_CONCURRENCY
            }
            Some(c) => c,
        };
        let order_by = shape.ordering.and_then(|ordering| {
            if !durable {
                let at = find(node, "ordering").unwrap_or(node);
                self.errors.push(ctx.error(
                    at.loc,
                    "ordering",
                    "`ordering` needs `delivery: durable` (a direct flow keeps its input's order only with `concurrency: 1`)",
                ));
                return None;
            }
            Mapping::compile(&ordering.by_key)
                .map_err(|d| {
                    let errs = BuildError::from_diagnostics("ordering.by_key", d);
                    self.errors.extend(ctx.build_errors(node, errs));
                })
                .ok()
        });

        let input = match node.get("input") {
            None => {
                self.errors
                    .push(ctx.error(node.loc, "input", "a flow needs an `input`"));
                None
            }
            Some(n) => self.input(ctx, n),
        };

        let mut processors = Vec::new();
        if let Some(Kind::Seq(items)) = node.get("pipeline").map(|p| &p.kind) {
            for (i, item) in items.iter().enumerate() {
                let id = format!("pipeline[{i}].{}", component_kind(item));
                ctx.component = Some(id.clone());
                match from_node::<ProcessorConfig>(item) {
                    Ok(config) => match config.build(self.shared, &self.resources) {
                        Ok(p) => processors.push((id, p)),
                        Err(errs) => self.errors.extend(ctx.build_errors(settings(item), errs)),
                    },
                    Err(e) => self.errors.push(ctx.de_error(e, true)),
                }
            }
        }
        // What follows is the flow's, not the input's or the last step's.
        ctx.component = None;

        let mut outputs = Vec::new();
        match (node.get("output"), node.get("outputs")) {
            (Some(_), Some(n)) => self.errors.push(ctx.error(
                n.loc,
                "outputs",
                "give either `output` or `outputs`, not both",
            )),
            // An endpoint that answers with the pipeline's result may have nothing to send
            // on: its output is `drop`.
            (None, None)
                if matches!(&input, Some((_, Input::HttpServer(e))) if e.replies_with_pipeline()) =>
            {
                let config = OutputConfig::drop();
                if let Ok(output) = config.build(self.shared, &self.resources) {
                    outputs.push(("output.drop".to_string(), output, config.retry(durable)));
                }
            }
            (None, None) => self.errors.push(ctx.error(
                node.loc,
                "output",
                "a flow needs an `output` (or a list of `outputs`), unless its `http_server` answers with `response: pipeline`",
            )),
            (Some(n), None) => {
                if let Some(o) = self.output(ctx, n, "output".into(), durable) {
                    outputs.push(o);
                }
            }
            (None, Some(n)) => match &n.kind {
                Kind::Seq(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(o) = self.output(ctx, item, format!("outputs[{i}]"), durable) {
                            outputs.push(o);
                        }
                    }
                }
                // Not a list: the flow's shape said so already.
                Kind::Seq(_) => self.errors.push(ctx.error(
                    n.loc,
                    "outputs",
                    "`outputs` is a non-empty list of outputs",
                )),
                _ => {}
            },
        }
        ctx.component = None;
        let (input_id, input) = input?;
        if self.errors.len() > before {
            return None;
        }
        let durable = durable.then_some(Limits {
            max_messages: shape.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
            max_bytes: shape
                .max_queued_bytes
                .map_or(DEFAULT_MAX_QUEUED_BYTES, |s| s.0),
        });
        if durable.is_some()
            && let Input::HttpServer(endpoint) = &input
            && endpoint.replies_with_pipeline()
        {
            let input_node = node.get("input").expect("the input was built from it");
            let loc = find(settings(input_node), "response")
                .unwrap_or(input_node)
                .loc;
            ctx.component = Some(input_id.clone());
            self.errors.push(ctx.error(
                loc,
                "response",
                "`response: pipeline` needs `delivery: direct`: with `durable` the caller is answered once the message is stored, before the pipeline runs",
            ));
            return None;
        }
        Some(FlowSpec {
            name: name.to_string(),
            concurrency,
            input_id,
            input,
            processors,
            outputs,
            durable,
            order_by,
            order_partitions,
            log_level: shape.log_level.map(LevelFilter::from),
            fingerprint: node.canonical(),
            // Written once every file is read: a secret field of a flow or resource read
            // later may hold a value this flow's settings show too.
            effective: String::new(),
        })
    }

    fn input(&mut self, ctx: &mut Ctx, node: &Node) -> Option<(String, Input)> {
        let id = format!("input.{}", component_kind(node));
        ctx.component = Some(id.clone());
        let config = match from_node::<InputConfig>(node) {
            Ok(c) => c,
            Err(e) => {
                self.errors.push(ctx.de_error(e, true));
                return None;
            }
        };
        match config.build(self.shared, &self.resources) {
            Ok(input) => {
                if let Input::HttpServer(endpoint) = &input {
                    let flow = ctx.flow.clone().unwrap_or_default();
                    let shared = (
                        endpoint.tls.as_ref().map(|t| t.config().clone()),
                        endpoint.limits.clone(),
                    );
                    match self.listeners.get(&endpoint.address) {
                        Some((other, theirs)) if *theirs != shared => {
                            let field = if theirs.0 != shared.0 {
                                "tls"
                            } else {
                                "limits"
                            };
                            let loc = find(settings(node), field)
                                .or_else(|| find(settings(node), "address"))
                                .unwrap_or(node)
                                .loc;
                            self.errors.push(ctx.error(
                                loc,
                                field,
                                format!(
                                    "flow `{other}` serves {} with other `{field}` settings; flows sharing an address share its `tls` and `limits`",
                                    endpoint.address
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            self.listeners
                                .insert(endpoint.address, (flow.clone(), shared));
                        }
                    }
                    let served = self.endpoints.entry(endpoint.address).or_default();
                    served.push((endpoint.path.clone(), endpoint.methods().to_vec(), flow));
                    let routes = served
                        .iter()
                        .map(|(p, m, f)| (p.as_str(), m.as_slice(), f.as_str()))
                        .collect::<Vec<_>>();
                    let last = routes.len() - 1;
                    let clash = crate::inputs::http_server::route_conflicts(&routes)
                        .into_iter()
                        .find(|(i, _)| *i == last);
                    if let Some((_, why)) = clash {
                        served.pop();
                        let loc = find(settings(node), "path").unwrap_or(node).loc;
                        self.errors.push(ctx.error(
                            loc,
                            "path",
                            format!("{why} on {}", endpoint.address),
                        ));
                    }
                }
                Some((id, input))
            }
            Err(errs) => {
                self.errors.extend(ctx.build_errors(settings(node), errs));
                None
            }
        }
    }

    fn output(
        &mut self,
        ctx: &mut Ctx,
        node: &Node,
        slot: String,
        durable: bool,
    ) -> Option<(String, Output, RetryPolicy)> {
        let id = format!("{slot}.{}", component_kind(node));
        ctx.component = Some(id.clone());
        let config = match from_node::<OutputConfig>(node) {
            Ok(c) => c,
            Err(e) => {
                self.errors.push(ctx.de_error(e, true));
                return None;
            }
        };
        match config.build(self.shared, &self.resources) {
            Ok(output) => Some((id, output, config.retry(durable))),
            Err(errs) => {
                self.errors.extend(ctx.build_errors(settings(node), errs));
                None
            }
        }
    }
}

/// Gives errors that only have a location (unset variables) the flow and component they sit in.
fn annotate_env_errors(errors: &mut [ConfigError], file: &str, root: &Node) {
    let Some(Kind::Map(flows)) = root.get("flows").map(|n| &n.kind) else {
        return;
    };
    for err in errors
        .iter_mut()
        .filter(|e| e.file == file && e.flow.is_none() && e.field.is_empty())
    {
        for (name, flow) in flows {
            let Kind::Str(name) = &name.kind else {
                continue;
            };
            let Kind::Map(parts) = &flow.kind else {
                continue;
            };
            for (key, part) in parts {
                let Kind::Str(key) = &key.kind else { continue };
                let candidates: Vec<(String, &Node)> = match &part.kind {
                    Kind::Seq(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("{key}[{i}].{}", component_kind(n)), n))
                        .collect(),
                    _ => vec![(format!("{key}.{}", component_kind(part)), part)],
                };
                for (id, n) in candidates {
                    if contains(n, err.loc) {
                        err.flow = Some(name.clone());
                        err.component = Some(id);
                    }
                }
            }
        }
    }
}

fn contains(node: &Node, loc: Loc) -> bool {
    if node.loc == loc {
        return true;
    }
    match &node.kind {
        Kind::Seq(items) => items.iter().any(|n| contains(n, loc)),
        Kind::Map(entries) => entries.iter().any(|(_, v)| contains(v, loc)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let env = |name: &str| (name == "SET").then(|| "value".to_string());
        match load_str("f.yaml", text, &env, &Shared::default()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_missing_output_is_the_flows_error_not_its_last_steps() {
        let errors =
            check("flows:\n  f:\n    input: { stdin: {} }\n    pipeline:\n      - map: '.a = 1'\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("flow `f`") && errors[0].contains("field `output`"),
            "{errors:?}"
        );
        assert!(!errors[0].contains("pipeline[0]"), "{errors:?}");
        // An endpoint that answers with the pipeline's result needs none.
        assert!(
            check("flows:\n  f:\n    input: { http_server: { address: 127.0.0.1:1, path: /x, response: pipeline } }\n    pipeline:\n      - map: '.a = 1'\n").is_empty()
        );
        // Nor the input's, without a pipeline.
        let errors = check("flows:\n  f:\n    input: { stdin: {} }\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("flow `f`, field `output`"), "{errors:?}");
    }

    #[test]
    fn an_unset_variable_is_one_error_not_also_its_fields() {
        let errors = check(
            "flows:\n  f:\n    input: { http_server: { address: 127.0.0.1:1, path: /x, auth: { hmac: { preset: github, secret: \"${GH}\" } } } }\n    output:\n      http_client: { url: \"${HOOK_URL}/x\" }\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| e.contains("is not set")),
            "{errors:?}"
        );
        // A field's own error elsewhere is still told.
        let errors = check(
            "flows:\n  f:\n    input: { http_server: { address: 127.0.0.1:1, path: /x } }\n    output:\n      http_client: { url: \"${HOOK_URL}/x\", retry: { max_attempts: 0 } }\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn no_attempts_at_all_is_refused_at_its_field() {
        let flow = |n: u32| {
            format!(
                "flows:\n  f:\n    input: {{ stdin: {{}} }}\n    output:\n      http_client: {{ url: \"http://127.0.0.1:9/\", retry: {{ max_attempts: {n} }} }}\n"
            )
        };
        let errors = check(&flow(0));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("f.yaml:5:")
                && errors[0].contains("field `retry.max_attempts`: at least 1"),
            "{errors:?}"
        );
        assert!(check(&flow(1)).is_empty());
    }

    #[test]
    fn a_history_past_its_bound_is_refused_where_it_is_written() {
        let flow = "flows:\n  f:\n    input: { stdin: {} }\n    output: { drop: {} }\n";
        let errors = check(&format!("admin:\n  ui:\n    history: 1000001\n{flow}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("f.yaml:3:14:") && errors[0].contains("admin.ui.history"),
            "{errors:?}"
        );
        assert!(check(&format!("admin:\n  ui: {{ history: 1000 }}\n{flow}")).is_empty());
    }

    #[test]
    fn admin_and_outbound_are_set_once_and_their_errors_located() {
        let dir = std::env::temp_dir().join(format!("weft-once-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flow = "flows:\n  f:\n    input: { stdin: {} }\n    output: { drop: {} }\n";
        let (a, b) = (dir.join("a.yaml"), dir.join("b.yaml"));
        std::fs::write(
            &a,
            format!(
                "admin: {{ address: 127.0.0.1:1 }}\noutbound: {{ deny: [10.0.0.0/8] }}\n{flow}"
            ),
        )
        .unwrap();
        std::fs::write(
            &b,
            "admin: { address: 127.0.0.1:2 }\noutbound:\n  deny: [ok.example, \"not a host\"]\n",
        )
        .unwrap();
        let errors: Vec<String> = match load(&[&a, &b], &Shared::default()) {
            Ok(_) => panic!("loaded"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        // (and that b.yaml has no `flows:`)
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].contains("b.yaml:1:1: field `admin`: `admin` is set in more than one file"),
            "{errors:#?}"
        );
        assert!(
            errors[1]
                .contains("b.yaml:2:1: field `outbound`: `outbound` is set in more than one file"),
            "{errors:#?}"
        );
        let errors = check(&format!(
            "outbound:\n  deny: [ok.example, \"not a host\"]\n{flow}"
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "f.yaml:2:22: field `outbound.deny.1`: `not a host` is not a host name"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_good_config_loads() {
        let errors = check(
            "flows:\n  a:\n    input:\n      generate: {mapping: '.x = 1', count: 1}\n    pipeline:\n      - map: .y = 2\n    output: {drop: {}}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let text = "\
flows:
  a:
    input:
      http_server:
        address: 127.0.0.1:1
        max_bdy_size: 1MiB
    pipeline:
      - mapp: .x = 1
      - map: |
          .a = 1
          .b = upcase(
    output:
      http_client:
        url: http://h/${UNSET_VAR}
  b:
    inptu: {stdin: {}}
    output: {drop: {}}
";
        let errors = check(text);
        let all = errors.join("\n");
        assert!(
            all.contains(
                "f.yaml:6:9: flow `a`, input.http_server, field `max_bdy_size`: unknown field"
            ),
            "{all}"
        );
        assert!(all.contains("did you mean `max_body_size`?"), "{all}");
        assert!(
            all.contains("f.yaml:8:9: flow `a`, pipeline[0].mapp, "),
            "{all}"
        );
        assert!(all.contains("did you mean `map`?"), "{all}");
        assert!(
            all.contains("f.yaml:11:23: flow `a`, pipeline[1].map, syntax error"),
            "{all}"
        );
        assert!(
            all.contains(
                "f.yaml:14:14: flow `a`, output.http_client, environment variable `UNSET_VAR`"
            ),
            "{all}"
        );
        assert!(all.contains("flow `b`, field `inptu`"), "{all}");
        assert!(all.contains("did you mean `input`?"), "{all}");
    }

    #[test]
    fn shared_call_settings_are_checked_as_the_component_own() {
        // `circuit_breaker` and `timeout` come from `clients::call::call_config!`; `result` is
        // a processor's, not an output's.
        let text = "\
flows:
  a:
    input: {stdin: {}}
    pipeline:
      - graphql:
          url: http://h/graphql
          query: '{ a }'
          timout: 5s
          result: .a = %response.data
    output:
      graphql:
        url: http://h/graphql
        query: '{ a }'
        circuit_breakr: x
  b:
    input: {stdin: {}}
    output:
      soap: {url: http://h/soap, body: '<a/>', result: .a = 1}
";
        let all = check(text).join("\n");
        for expected in [
            "f.yaml:8:11: flow `a`, pipeline[0].graphql, field `timout`: unknown field",
            "did you mean `timeout`?",
            "f.yaml:14:9: flow `a`, output.graphql, field `circuit_breakr`: unknown field",
            "did you mean `circuit_breaker`?",
            "f.yaml:18:48: flow `b`, output.soap, field `result`: unknown field",
        ] {
            assert!(all.contains(expected), "{expected}\n{all}");
        }
        assert!(
            !all.contains("pipeline[0].graphql, field `result`"),
            "{all}"
        );
    }

    #[test]
    fn request_reply_needs_direct_delivery() {
        let errors = check(
            "flows:\n  a:\n    delivery: durable\n    input:\n      http_server:\n        address: 127.0.0.1:1\n        response: pipeline\n    output: {drop: {}}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("f.yaml:7:19: flow `a`, input.http_server, field `response`: `response: pipeline` needs `delivery: direct`"),
            "{errors:?}"
        );
        let errors = check(
            "flows:\n  a:\n    delivery: durabel\n    input: {stdin: {}}\n    output: {drop: {}}\n",
        );
        assert!(
            errors[0].contains("use `direct` or `durable`"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_file_and_flow_shapes_are_checked_like_components() {
        let errors = check(
            "flows:\n  a:\n    delivery: durabel\n    concurrency: 0\n    input: {stdin: {}}\n    pipeline:\n      - mapp: .x = 1\n    output: {drop: {}}\n  b:\n    log_level: loud\n    input: {stdin: {}}\n    output: {drop: {}}\nshutdown_timeot: 5s\n",
        );
        let all = errors.join("\n");
        assert!(
            all.contains("f.yaml:13:1: field `shutdown_timeot`: unknown field"),
            "{all}"
        );
        assert!(all.contains("did you mean `shutdown_timeout`?"), "{all}");
        assert!(
            all.contains("f.yaml:3:15: flow `a`, field `delivery`: unknown value `durabel`; use `direct` or `durable`"),
            "{all}"
        );
        // The flow's own settings being wrong hides neither its components' errors nor the
        // next flow's.
        assert!(
            all.contains("f.yaml:7:9: flow `a`, pipeline[0].mapp, "),
            "{all}"
        );
        assert!(
            all.contains("flow `b`, field `log_level`: unknown value `loud`; use `error`, `warn`, `info`, `debug`, `trace` or `off`"),
            "{all}"
        );
        let errors = check(
            "flows:\n  a:\n    concurrency: 0\n    input: {stdin: {}}\n    output: {drop: {}}\n",
        );
        assert_eq!(
            errors,
            [
                "f.yaml:3:18: flow `a`, field `concurrency`: concurrency is a whole number above zero"
            ]
        );
    }

    #[test]
    fn vrl_errors_point_into_single_line_values() {
        let errors = check(
            "flows:\n  a:\n    input: {stdin: {}}\n    pipeline:\n      - filter: .a ==\n    output: {drop: {}}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("f.yaml:5:"), "{errors:?}");
    }

    #[test]
    fn ordering_is_checked_where_it_is_written() {
        let errors = check(
            "flows:\n  a:\n    ordering: { by_key: .customer }\n    input: {stdin: {}}\n    output: {drop: {}}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "f.yaml:3:15: flow `a`, field `ordering`: `ordering` needs `delivery: durable`"
            ),
            "{errors:?}"
        );
        let errors = check(
            "flows:\n  a:\n    delivery: durable\n    ordering: { by_kye: .customer }\n    input: {stdin: {}}\n    output: {drop: {}}\n",
        );
        assert!(errors[0].contains("field `ordering.by_kye`"), "{errors:?}");
        assert!(errors[0].contains("did you mean `by_key`?"), "{errors:?}");
        let errors = check(
            "flows:\n  a:\n    delivery: durable\n    ordering: { by_key: .customer + }\n    input: {stdin: {}}\n    output: {drop: {}}\n",
        );
        assert!(
            errors[0].starts_with("f.yaml:4:") && errors[0].contains("field `ordering.by_key`"),
            "{errors:?}"
        );
    }

    #[test]
    fn resources_are_checked_and_names_resolved() {
        let errors = check(
            "resources:\n  auth:\n    crm: { bearr: t }\n  rate_limits:\n    api: { requests: 0 }\nflows:\n  a:\n    input: {stdin: {}}\n    output:\n      http_client: { url: \"http://x/\", auth: crn, rate_limit: api }\n",
        );
        let all = errors.join("\n");
        assert!(
            all.contains("f.yaml:3:12: resources.auth.crm, unknown component `bearr`"),
            "{all}"
        );
        assert!(all.contains("did you mean `bearer`?"), "{all}");
        assert!(
            all.contains(
                "resources.rate_limits.api, field `requests`: requests must be above zero"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "f.yaml:10:46: flow `a`, output.http_client, field `auth`: no auth profile `crn`"
            ),
            "{all}"
        );
    }
}
