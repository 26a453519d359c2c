//! `GET /api/v1/nodes` (admin scope): the fleet's nodes, their capabilities, load and last
//! heartbeat.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::time::rfc3339;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::AppState;

/// Every registered node (the embedded default's local node too).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "admin",
    responses((status = 200, body = crate::api::docs::NodeList), (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require("admin")?;
    let nodes = state
        .queue
        .nodes()
        .await
        .map_err(|e| ApiError::Unavailable(format!("node registry: {e}")))?;
    let live_ms = state.config.node_live_ms();
    let now = kiln_protocol::now_ms();
    let list: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "hostname": n.hostname,
                "version": n.version,
                "state": if !n.live(live_ms) { "lost" } else if n.draining { "draining" } else { "ready" },
                "slots": n.slots,
                "busy": n.busy,
                "load1": n.load1,
                "jobs_done": n.jobs_done,
                "classes": n.classes,
                "capabilities": n.capabilities,
                "metrics_addr": n.metrics_addr,
                "started_at": rfc3339(n.started_at_ms),
                "last_heartbeat": rfc3339(now - n.age_ms),
                "last_heartbeat_age_ms": n.age_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": list })))
}
