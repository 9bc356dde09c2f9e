//! The subcommands that are more than a call into the library, one module each.

pub mod checkpoint;
pub mod dlq;
pub mod logging;
pub mod memory;
pub mod run;
pub mod tap;

use std::path::PathBuf;

/// Where a tool finds the store: a data directory's, or a cluster's on its NATS.
#[derive(clap::Args)]
pub struct StoreArgs {
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    data_dir: PathBuf,
    /// The NATS server of the cluster whose shared store to use (checkpoints, dead letters),
    /// instead of the data directory's.
    #[arg(long, env = "WEFT_CLUSTER", hide_env_values = true)]
    cluster: Option<String>,
    /// The cluster's name (`cluster.name`).
    #[arg(long, default_value = "weft")]
    cluster_name: String,
}

impl StoreArgs {
    /// Opens it; `none_yet` says why a data directory has no store (which flows make one).
    pub async fn open(&self, none_yet: &str) -> anyhow::Result<weft_store::Store> {
        if let Some(url) = self.cluster.as_deref().filter(|u| !u.is_empty()) {
            return weft::cluster::shared_state(url, &self.cluster_name)
                .await
                .map_err(anyhow::Error::msg);
        }
        let path = self.data_dir.join("weft.db");
        anyhow::ensure!(
            path.exists(),
            "no store at {} ({none_yet} with this --data-dir or WEFT_DATA_DIR)",
            path.display()
        );
        Ok(weft_store::Store::open(&path, weft_store::Durability::Process).await?)
    }
}
