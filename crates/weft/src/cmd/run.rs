//! `weft run`: loads the config, starts the engine and the admin endpoint, reloads when a
//! config file changes or on SIGHUP, and drains on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use weft::clients::Shared;
use weft::load;

use super::logging::init_logging;
use crate::{LogFormat, report};

/// `--cluster` and `--node`.
pub struct ClusterFlags {
    pub url: Option<String>,
    pub node: Option<String>,
}

pub async fn run(
    files: Vec<PathBuf>,
    admin_flag: Option<String>,
    admin_token: Option<String>,
    data_dir: PathBuf,
    cluster: ClusterFlags,
    log_format: LogFormat,
) -> anyhow::Result<ExitCode> {
    // What the watcher compares with: the bytes this load read.
    let read_at_start: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
    let env = weft::admin::config::EnvLookup::default();
    let loaded = match load::load_with(&files, &|name: &str| env.get(name), &Shared::default()) {
        Ok(mut loaded) => {
            apply_cluster_flags(&mut loaded, cluster)?;
            loaded
        }
        Err(errors) => {
            init_logging(log_format, false, None);
            return Ok(report(&errors, &env));
        }
    };
    drop(env);
    let export = match loaded.tracing.export() {
        None => {
            init_logging(log_format, false, None);
            None
        }
        Some(otlp) => {
            let (layer, export) = weft::telemetry::export_layer(&otlp)?;
            init_logging(log_format, false, Some(Box::new(layer)));
            tracing::info!(endpoint = %otlp.endpoint, "exporting spans over OTLP/HTTP");
            Some(export)
        }
    };
    let admin: SocketAddr = match admin_flag {
        Some(flag) => flag
            .parse()
            .context("--admin-address / WEFT_ADMIN_ADDRESS must be ip:port, like 127.0.0.1:9464")?,
        None => loaded.admin_address.unwrap_or_else(|| {
            weft::admin::DEFAULT_ADDRESS
                .parse()
                .expect("the default admin address parses")
        }),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let admin_token = admin_token
        .filter(|t| !t.is_empty())
        .map(weft::config::Secret::new)
        .or(loaded.admin_token.clone());
    let (reloads, reloaded) = tokio::sync::mpsc::channel(1);
    let config = weft::admin::config::ConfigState::default();
    config.set_files(files.iter().map(|f| f.display().to_string()).collect());
    tokio::spawn(watch_config(
        files,
        read_at_start,
        reloads,
        AdminSettings::of(&loaded),
        (loaded.resources_text.clone(), loaded.resources.clone()),
        config.clone(),
    ));
    let (started, on_start) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if on_start.await.is_ok() {
            // What start-up spawned (the config watcher's first look, the flows' first polls)
            // has run by then.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            release_startup_pages();
        }
    });
    let options = weft::engine::Options {
        admin_address: admin,
        admin_token,
        admin_tls: loaded.admin_tls.clone(),
        admin_hosts: loaded.admin_hosts.clone(),
        admin_ui_actions: loaded.admin_ui_actions,
        admin_history: loaded.admin_history,
        config: Some(config),
        data_dir,
        reloads: Some(reloaded),
        started: Some(started),
    };
    let summary = weft::engine::run(loaded, options, shutdown).await;
    if let Some(export) = export {
        // Flushes what is buffered; the batch processor blocks its caller while it does.
        tokio::task::spawn_blocking(move || export.shutdown())
            .await
            .ok();
    }
    let summary = summary?;
    Ok(if summary.input_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--cluster` and `--node` over the config's `cluster:` (or as the whole of it).
fn apply_cluster_flags(loaded: &mut load::Loaded, flags: ClusterFlags) -> anyhow::Result<()> {
    let ClusterFlags { url, node } = flags;
    let url = url.filter(|u| !u.is_empty());
    if url.is_none() && node.is_none() {
        return Ok(());
    }
    let Some(url) = url.or_else(|| loaded.cluster.as_ref().map(|c| c.url.expose().to_string()))
    else {
        anyhow::bail!(
            "--node / WEFT_NODE names this node in a cluster: give the cluster too (--cluster / WEFT_CLUSTER, or `cluster:` in the config)"
        );
    };
    let current = loaded.cluster.take();
    let config = weft::cluster::ClusterConfig {
        nats: weft::cluster::NatsConfig {
            url: weft::config::Secret::new(url),
            ca: current.as_ref().and_then(|c| c.ca.clone()),
            cert: current
                .as_ref()
                .and_then(|c| c.identity.as_ref().map(|i| i.0.clone())),
            key: current
                .as_ref()
                .and_then(|c| c.identity.as_ref().map(|i| i.1.clone())),
        },
        name: current.as_ref().map(|c| c.name.clone()),
        node: node.or_else(|| current.as_ref().map(|c| c.node.clone())),
        lease_ttl: current
            .as_ref()
            .map(|c| weft::config::units::Dur(c.lease_ttl)),
        replicas: current.as_ref().map(|c| c.replicas),
    };
    let settings = config
        .settings()
        .map_err(|(field, message)| anyhow::anyhow!("cluster.{field}: {message}"))?;
    loaded.cluster = Some(settings);
    Ok(())
}

/// Start-up is over: its pages of the executable go back to the page cache (`memory.rs`).
fn release_startup_pages() {
    match super::memory::release_startup_pages() {
        Ok(released) => tracing::debug!(
            resident_before_kib = released.before_kib,
            resident_after_kib = released.after_kib,
            "gave back the executable's start-up pages"
        ),
        Err(error) => {
            tracing::debug!(%error, "could not give back the executable's start-up pages")
        }
    }
}

/// Hot reload: when a config file's content changes (looked at every second, and taken once
/// it reads the same twice in a row, so a file being written is not loaded half done), on
/// SIGHUP or when the admin API asks (`POST /api/v1/config/reload`), the files are loaded
/// again (how it went is kept in `status` for the API); a valid config goes to the engine,
/// which restarts only the flows that changed, and an invalid one is logged while the running
/// flows go on.
pub async fn watch_config(
    files: Vec<PathBuf>,
    mut applied: Vec<Option<Vec<u8>>>,
    reloads: tokio::sync::mpsc::Sender<load::Loaded>,
    admin: AdminSettings,
    mut resources: (String, weft::clients::Resources),
    status: weft::admin::config::ConfigState,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let read = |files: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
        files.iter().map(|f| std::fs::read(f).ok()).collect()
    };
    let mut pending: Option<Vec<Option<Vec<u8>>>> = None;
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = every.tick() => {
                let now = read(&files);
                if now == applied {
                    pending = None;
                    continue;
                }
                if pending.as_ref() != Some(&now) {
                    pending = Some(now); // changed: wait for it to settle
                    continue;
                }
                "a config file changed"
            }
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = status.reload_requested() => "the admin API",
        };
        pending = None;
        applied = read(&files);
        tracing::info!(reason = why, "reloading the config");
        let paths = files.clone();
        let previous = resources.clone();
        let env = std::sync::Arc::new(weft::admin::config::EnvLookup::default());
        let lookup = env.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            load::load_reusing(
                &paths,
                &|name: &str| lookup.get(name),
                &Shared::default(),
                Some((&previous.0, &previous.1)),
            )
        })
        .await;
        match loaded {
            Ok(Ok(loaded)) if loaded.flows.is_empty() => {
                tracing::error!("config reload refused: it has no flow; the running flows go on");
                status.record(why, Err(vec!["the config has no flow".into()]));
            }
            Ok(Ok(loaded)) => {
                if AdminSettings::of(&loaded) != admin {
                    tracing::warn!(
                        "`admin` or `tracing` settings changed: they take effect when weft restarts"
                    );
                }
                resources = (loaded.resources_text.clone(), loaded.resources.clone());
                if reloads.send(loaded).await.is_err() {
                    return; // the engine stopped
                }
                status.record(why, Ok(()));
            }
            Ok(Err(errors)) => {
                // An error may quote a `${VAR}`'s value: neither the log nor the API shows it.
                let errors: Vec<String> = errors.iter().map(|e| env.hide(e.to_string())).collect();
                for e in &errors {
                    tracing::error!(error = %e, "config error");
                }
                tracing::error!(
                    errors = errors.len(),
                    "config reload refused: the running flows go on unchanged"
                );
                status.record(why, Err(errors));
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed");
                status.record(why, Err(vec![format!("the reload failed: {e}")]));
            }
        }
    }
}

/// The `admin` settings a reload cannot change (the endpoint is bound once).
#[derive(PartialEq)]
pub struct AdminSettings {
    address: Option<SocketAddr>,
    token: Option<String>,
    tls: bool,
    hosts: Vec<String>,
    ui_actions: bool,
    /// Not `admin`, but likewise set up once: span export.
    tracing: weft::telemetry::TracingConfig,
}

impl AdminSettings {
    fn of(loaded: &load::Loaded) -> AdminSettings {
        AdminSettings {
            address: loaded.admin_address,
            token: loaded.admin_token.as_ref().map(|t| t.expose().to_string()),
            tls: loaded.admin_tls.is_some(),
            hosts: loaded.admin_hosts.clone(),
            ui_actions: loaded.admin_ui_actions,
            tracing: loaded.tracing.clone(),
        }
    }
}

/// First SIGTERM/SIGINT: drain and stop. Second: stop now. SIGHUP reloads TLS certificates
/// (each server's watcher listens for it too) and the config ([`watch_config`]); it never
/// stops weft.
pub async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut hangup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!(
                    "SIGHUP received: the config and TLS certificate files are read again"
                );
            }
        });
    }
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received; draining (send it again to stop at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without waiting for messages in flight");
    std::process::exit(130);
}
