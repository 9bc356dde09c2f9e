//! Where polling inputs (`http_poll`, `sql_poll`) keep their watermarks: the store's key/value
//! table, namespace `checkpoint`, under the input's `checkpoint_key` (its flow's name unless
//! set, so that renaming a flow can keep its place). A checkpoint is saved as
//! `{"value": …, "saved_at": ms}`; one saved before it carried its time reads as its value.
//! `weft checkpoint` and the admin API read and change them here.
//!
//! An input writes its checkpoint over the one it read ([`save_over`]): by compare-and-set,
//! so that a write from a node that lost its lease (on a cluster), or one racing an operator's
//! `weft checkpoint set`, fails instead of moving the watermark back.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use weft_store::Store;

use super::clock::now_ms;

/// The store namespace of checkpoints.
pub const NAMESPACE: &str = "checkpoint";

/// Where an input keeps its checkpoint: its `checkpoint_key`, else its flow's name; `None`
/// for an input without a watermark.
pub fn key(has_watermark: bool, configured: Option<&str>, flow: &str) -> Option<String> {
    has_watermark.then(|| configured.unwrap_or(flow).to_string())
}

/// A saved checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The watermark: the next poll starts after it.
    pub value: Json,
    /// When it was saved (milliseconds since the epoch); unknown for old checkpoints.
    #[serde(default)]
    pub saved_at: Option<i64>,
}

fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let json: Json = serde_json::from_slice(bytes)
        .map_err(|e| format!("the saved checkpoint is unreadable: {e}"))?;
    match json {
        Json::Object(ref map)
            if map.len() == 2 && map.contains_key("value") && map.contains_key("saved_at") =>
        {
            serde_json::from_value(json)
                .map_err(|e| format!("the saved checkpoint is unreadable: {e}"))
        }
        value => Ok(Saved {
            value,
            saved_at: None,
        }),
    }
}

/// The checkpoint under `key`, if one was saved.
pub async fn load(store: &Store, key: &str) -> Result<Option<Saved>, String> {
    Ok(load_stored(store, key).await?.map(|(saved, _)| saved))
}

/// [`load`], with the bytes as stored (what [`save_over`] compares with).
pub async fn load_stored(store: &Store, key: &str) -> Result<Option<(Saved, Vec<u8>)>, String> {
    match store
        .kv_get(NAMESPACE, key, now_ms())
        .await
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => decode(&bytes).map(|saved| Some((saved, bytes))),
        None => Ok(None),
    }
}

/// Saves `value` under `key` only if what is stored there is still `read` (`None`: nothing);
/// returns the time it was stamped with and the bytes stored.
pub async fn save_over(
    store: &Store,
    key: &str,
    value: Json,
    read: Option<&[u8]>,
) -> Result<(i64, Vec<u8>), String> {
    let saved = Saved {
        value,
        saved_at: Some(now_ms()),
    };
    let bytes = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
    let written = match read {
        Some(read) => store.kv_replace(NAMESPACE, key, read, &bytes, None).await,
        None => {
            store
                .kv_put_if_absent(NAMESPACE, key, &bytes, None, now_ms())
                .await
        }
    }
    .map_err(|e| format!("could not save the checkpoint: {e}"))?;
    if !written {
        return Err("the checkpoint changed since this poll read it (another node polls this flow now, or it was set by hand): this poll stops without saving, and the next one starts from the checkpoint saved".into());
    }
    Ok((saved.saved_at.unwrap_or_default(), bytes))
}

/// Saves `value` under `key`, stamped with the time now; returns that time.
pub async fn save(store: &Store, key: &str, value: Json) -> Result<i64, String> {
    let saved = Saved {
        value,
        saved_at: Some(now_ms()),
    };
    let bytes = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
    store
        .kv_put(NAMESPACE, key, &bytes, None)
        .await
        .map_err(|e| format!("could not save the checkpoint: {e}"))?;
    Ok(saved.saved_at.unwrap_or_default())
}

/// Forgets the checkpoint under `key`: the next poll starts from the configured `initial`.
/// `false` if there was none.
pub async fn reset(store: &Store, key: &str) -> Result<bool, String> {
    store
        .kv_delete(NAMESPACE, key, None)
        .await
        .map_err(|e| e.to_string())
}

/// Every checkpoint, by key.
pub async fn list(store: &Store) -> Result<Vec<(String, Saved)>, String> {
    let all = store
        .kv_list(NAMESPACE, now_ms(), 10_000)
        .await
        .map_err(|e| e.to_string())?;
    all.into_iter()
        .map(|(key, bytes)| decode(&bytes).map(|saved| (key, saved)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_save_over_a_checkpoint_that_changed_since_it_was_read_fails() {
        let dir = std::env::temp_dir().join(format!("weft-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("weft.db"), weft_store::Durability::Process)
            .await
            .unwrap();
        // Nothing read: the first save creates it; a second "first" save (another node's) fails.
        let (_, first) = save_over(&store, "k", Json::from(1), None).await.unwrap();
        assert!(save_over(&store, "k", Json::from(9), None).await.is_err());
        // Saved over what was read: fine; over a stale read (someone set it since): refused.
        let (_, second) = save_over(&store, "k", Json::from(2), Some(&first))
            .await
            .unwrap();
        let refused = save_over(&store, "k", Json::from(1), Some(&first))
            .await
            .unwrap_err();
        assert!(
            refused.contains("changed since this poll read it"),
            "{refused}"
        );
        let (saved, stored) = load_stored(&store, "k").await.unwrap().unwrap();
        assert_eq!((saved.value, stored), (Json::from(2), second));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_checkpoints_read_as_their_value() {
        assert_eq!(
            decode(b"\"2026-01-01T00:00:00Z\"").unwrap(),
            Saved {
                value: Json::from("2026-01-01T00:00:00Z"),
                saved_at: None
            }
        );
        assert_eq!(
            decode(br#"{"value": [1, "a"], "saved_at": 5}"#).unwrap(),
            Saved {
                value: serde_json::json!([1, "a"]),
                saved_at: Some(5)
            }
        );
        // A watermark that is itself an object stays whole.
        let odd = br#"{"value": 1, "other": 2}"#;
        assert_eq!(
            decode(odd).unwrap().value,
            serde_json::json!({"value": 1, "other": 2})
        );
    }
}
