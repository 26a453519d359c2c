//! `GET /api/v1/nodes` (admin scope): the fleet's nodes, their capabilities, load, GPUs and
//! last heartbeat; `POST /api/v1/nodes/{id}/gpus/{gpu}/enable|disable` to put a GPU back into
//! service or take it out; `POST /api/v1/nodes/{id}/drain|resume` to stop a node taking jobs
//! (it finishes the running ones) and to start it again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_protocol::NodeCommand;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::views::{GpuCommandView, NodeCommandView, NodeList, NodeView};
use crate::AppState;

/// Every registered node (the embedded default's local node too).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "admin",
    responses((status = 200, body = NodeList), (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<NodeList>, ApiError> {
    auth.require("admin")?;
    let nodes = state.nodes.list().await?;
    let (live_ms, now) = (state.config.node_live_ms(), kiln_protocol::now_ms());
    Ok(Json(NodeList {
        nodes: nodes
            .iter()
            .map(|n| NodeView::new(n, live_ms, now))
            .collect(),
    }))
}

/// Put a node's GPU back into service (admin): one that repeated faults took out, or that an
/// operator disabled. The node takes the command at its next heartbeat (within seconds).
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/gpus/{gpu}/enable", tag = "admin",
    params(("node_id" = String, Path, description = "The node's id"),
        ("gpu" = u32, Path, description = "The GPU's CUDA index on that node")),
    responses((status = 202, body = GpuCommandView), (status = 401, body = Error),
        (status = 403, body = Error), (status = 404, body = Error)))]
pub async fn enable_gpu(
    State(state): State<AppState>,
    auth: Auth,
    Path((node_id, gpu)): Path<(String, String)>,
) -> Result<(StatusCode, Json<GpuCommandView>), ApiError> {
    gpu_command(&state, auth, &node_id, &gpu, true).await
}

/// Take a node's GPU out of service (admin): it finishes the jobs on it and takes no more
/// until enabled again.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/gpus/{gpu}/disable", tag = "admin",
    params(("node_id" = String, Path, description = "The node's id"),
        ("gpu" = u32, Path, description = "The GPU's CUDA index on that node")),
    responses((status = 202, body = GpuCommandView), (status = 401, body = Error),
        (status = 403, body = Error), (status = 404, body = Error)))]
pub async fn disable_gpu(
    State(state): State<AppState>,
    auth: Auth,
    Path((node_id, gpu)): Path<(String, String)>,
) -> Result<(StatusCode, Json<GpuCommandView>), ApiError> {
    gpu_command(&state, auth, &node_id, &gpu, false).await
}

async fn gpu_command(
    state: &AppState,
    auth: Auth,
    node_id: &str,
    gpu: &str,
    enable: bool,
) -> Result<(StatusCode, Json<GpuCommandView>), ApiError> {
    auth.require("admin")?;
    let nodes = state.nodes.list().await?;
    let node = nodes
        .iter()
        .find(|n| n.node_id == node_id)
        .ok_or_else(|| ApiError::NotFound(format!("no node {node_id:?}")))?;
    let index = gpu
        .parse::<u32>()
        .ok()
        .filter(|i| node.capabilities.gpus.iter().any(|g| g.index == *i))
        .ok_or_else(|| ApiError::NotFound(format!("node {node_id:?} drives no GPU {gpu:?}")))?;
    let command = if enable {
        NodeCommand::EnableGpu { gpu: index }
    } else {
        NodeCommand::DisableGpu { gpu: index }
    };
    state.nodes.command(node_id, &command).await?;
    tracing::info!(
        node = node_id,
        gpu = index,
        enable,
        "GPU command sent to its node"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(GpuCommandView {
            node_id: node_id.to_string(),
            gpu: index,
            command: if enable { "enable" } else { "disable" }.into(),
        }),
    ))
}

/// Drain a node (admin): it finishes the jobs it runs and takes no new ones, as on SIGTERM,
/// but stays up and registered (`state` turns `draining`, then `drained`) until resumed. The
/// node takes the command at its next heartbeat.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/drain", tag = "admin",
    params(("node_id" = String, Path, description = "The node's id")),
    responses((status = 202, body = NodeCommandView), (status = 401, body = Error),
        (status = 403, body = Error), (status = 404, body = Error)))]
pub async fn drain(
    State(state): State<AppState>,
    auth: Auth,
    Path(node_id): Path<String>,
) -> Result<(StatusCode, Json<NodeCommandView>), ApiError> {
    node_command(&state, auth, &node_id, NodeCommand::Drain, "drain").await
}

/// Resume a drained node (admin): it takes jobs again.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/resume", tag = "admin",
    params(("node_id" = String, Path, description = "The node's id")),
    responses((status = 202, body = NodeCommandView), (status = 401, body = Error),
        (status = 403, body = Error), (status = 404, body = Error)))]
pub async fn resume(
    State(state): State<AppState>,
    auth: Auth,
    Path(node_id): Path<String>,
) -> Result<(StatusCode, Json<NodeCommandView>), ApiError> {
    node_command(&state, auth, &node_id, NodeCommand::Resume, "resume").await
}

async fn node_command(
    state: &AppState,
    auth: Auth,
    node_id: &str,
    command: NodeCommand,
    name: &str,
) -> Result<(StatusCode, Json<NodeCommandView>), ApiError> {
    auth.require("admin")?;
    if !state
        .nodes
        .list()
        .await?
        .iter()
        .any(|n| n.node_id == node_id)
    {
        return Err(ApiError::NotFound(format!("no node {node_id:?}")));
    }
    state.nodes.command(node_id, &command).await?;
    tracing::info!(node = node_id, command = name, "node command sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(NodeCommandView {
            node_id: node_id.to_string(),
            command: name.into(),
        }),
    ))
}
