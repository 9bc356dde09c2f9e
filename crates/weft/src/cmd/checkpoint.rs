//! `weft checkpoint`: lists, shows, sets and resets the watermarks of polling inputs
//! (`http_poll`, `sql_poll`) in the store directly, while weft runs or when it is stopped; a
//! running poller reads its watermark at the start of each poll. On a cluster
//! (`--cluster`), in the key/value bucket the nodes share.

use super::StoreArgs;

use clap::Subcommand;
use weft::core::checkpoint::{self, Saved};

#[derive(Subcommand)]
pub enum CheckpointAction {
    /// One JSON line per checkpoint: key, value, when it was saved.
    List(StoreArgs),
    /// One checkpoint.
    Show {
        /// The input's `checkpoint_key`: its flow's name unless set.
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sets a checkpoint: the next poll starts after VALUE (JSON: `"2026-01-01T00:00:00Z"`,
    /// `42`, `["2026-01-01", 7]` for sql_poll's columns).
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Forgets a checkpoint: the next poll starts from the input's `initial` (re-imports).
    Reset {
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn line(key: &str, saved: &Saved) -> serde_json::Value {
    serde_json::json!({
        "key": key,
        "value": saved.value,
        "saved_at": saved
            .saved_at
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339()),
    })
}

pub async fn checkpoint(action: CheckpointAction) -> anyhow::Result<()> {
    let fail = anyhow::Error::msg;
    match action {
        CheckpointAction::List(store) => {
            for (key, saved) in checkpoint::list(
                &store
                    .open("no polling flow with a watermark has run")
                    .await?,
            )
            .await
            .map_err(fail)?
            {
                println!("{}", line(&key, &saved));
            }
        }
        CheckpointAction::Show { key, store } => {
            let store = store
                .open("no polling flow with a watermark has run")
                .await?;
            match checkpoint::load(&store, &key).await.map_err(fail)? {
                Some(saved) => println!("{:#}", line(&key, &saved)),
                None => anyhow::bail!("no checkpoint `{key}` (`weft checkpoint list` shows them)"),
            }
        }
        CheckpointAction::Set { key, value, store } => {
            let value: serde_json::Value = serde_json::from_str(&value).map_err(|e| {
                anyhow::anyhow!(
                    "the value is not JSON ({e}); a text needs its quotes: '\"{value}\"'"
                )
            })?;
            checkpoint::save(
                &store
                    .open("no polling flow with a watermark has run")
                    .await?,
                &key,
                value,
            )
            .await
            .map_err(fail)?;
            println!("set `{key}`");
        }
        CheckpointAction::Reset { key, store } => {
            if checkpoint::reset(
                &store
                    .open("no polling flow with a watermark has run")
                    .await?,
                &key,
            )
            .await
            .map_err(fail)?
            {
                println!("reset `{key}`: the next poll starts from the input's `initial`");
            } else {
                anyhow::bail!("no checkpoint `{key}` (`weft checkpoint list` shows them)");
            }
        }
    }
    Ok(())
}
