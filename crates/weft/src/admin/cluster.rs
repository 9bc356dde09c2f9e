//! `GET /api/v1/cluster`: on a cluster, the nodes alive, the inputs each one runs and where
//! each durable flow's shared queue stands, as this node reads them from NATS.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, json_response};
use crate::cluster::Cluster;

/// The cluster as one node sees it.
#[derive(Serialize, ToSchema)]
pub struct ClusterInfo {
    /// The cluster's name (`cluster.name`).
    cluster: String,
    /// The NATS servers, without credentials.
    nats: String,
    /// The node answering.
    node: String,
    nodes: Vec<NodeInfo>,
    /// Each durable flow's queue, shared by every node.
    queues: Vec<crate::cluster::QueueStatus>,
}

/// A node alive.
#[derive(Serialize, ToSchema)]
pub struct NodeInfo {
    node: String,
    /// When it joined (RFC 3339).
    since: Option<String>,
    /// Its admin endpoint.
    admin: Option<String>,
    /// The flows whose input runs on it (it holds their lease).
    runs: Vec<String>,
}

pub(super) fn routes(cluster: Option<Cluster>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(status))
        .with_state(cluster)
}

/// The nodes alive and the inputs each runs.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses(
        (status = 200, body = ClusterInfo),
        (status = 404, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)))]
async fn status(State(cluster): State<Option<Cluster>>) -> Result<Response, ApiError> {
    let cluster = cluster.ok_or_else(|| {
        ApiError::NotFound("this weft is not part of a cluster (`cluster:` in its config)".into())
    })?;
    let status = cluster.status().await.map_err(|e| {
        ApiError::Store(weft_store::StoreError::Cluster(format!(
            "cannot read the cluster's buckets: {e}"
        )))
    })?;
    let nodes = status
        .nodes
        .iter()
        .map(|n| NodeInfo {
            runs: status
                .held_by(&n.node)
                .map(|key| key.trim_start_matches("input.").to_string())
                .collect(),
            since: chrono::DateTime::from_timestamp_millis(n.since_ms).map(|t| t.to_rfc3339()),
            admin: n.admin.clone(),
            node: n.node.clone(),
        })
        .collect();
    let info = ClusterInfo {
        cluster: status.cluster,
        nats: status.nats,
        node: cluster.settings.node.clone(),
        nodes,
        queues: status.queues,
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(info).unwrap_or_default(),
    ))
}
