//! `GET /api/v1/nodes` (admin scope): the fleet's nodes, their capabilities, load and last
//! heartbeat.

use axum::extract::State;
use axum::Json;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::views::{NodeList, NodeView};
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
