//! [`NodeRegistry`] in the hashes `kiln:nodes` (each node's JSON) and `kiln:nodes:seen` (when
//! it last reported, on Redis' clock); operators' commands in one list per node
//! (`kiln:node:<id>:commands`).

use async_trait::async_trait;

use super::{unavailable, RedisQueue, NODES, NODES_SEEN};
use crate::queue::{NodeRegistry, QueueError, NODE_FORGET};
use crate::{NodeCommand, NodeStatus};

#[async_trait]
impl NodeRegistry for RedisQueue {
    async fn report(&self, node: &NodeStatus) -> Result<(), QueueError> {
        let json = serde_json::to_string(node).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let mut c = self.conn().await?;
        let _: i64 = self
            .scripts
            .report_node
            .key(NODES)
            .key(NODES_SEEN)
            .arg(&node.node_id)
            .arg(json)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, node_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: () = redis::pipe()
            .atomic()
            .hdel(NODES, node_id)
            .ignore()
            .hdel(NODES_SEEN, node_id)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<NodeStatus>, QueueError> {
        let mut c = self.conn().await?;
        let flat: Vec<String> = self
            .scripts
            .nodes_read
            .key(NODES)
            .key(NODES_SEEN)
            .arg(NODE_FORGET.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for chunk in flat.chunks(3) {
            if let [id, json, age] = chunk {
                match serde_json::from_str::<NodeStatus>(json) {
                    Ok(mut n) => {
                        n.age_ms = age.parse().unwrap_or(i64::MAX);
                        out.push(n);
                    }
                    Err(e) => tracing::warn!(node = %id, error = %e, "unreadable node record"),
                }
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }

    async fn command(&self, node_id: &str, command: &NodeCommand) -> Result<(), QueueError> {
        let json =
            serde_json::to_string(command).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let key = commands_key(node_id);
        let mut c = self.conn().await?;
        let _: () = redis::pipe()
            .atomic()
            .rpush(&key, json)
            .ignore()
            .expire(&key, NODE_FORGET.as_secs() as i64)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_commands(&self, node_id: &str) -> Result<Vec<NodeCommand>, QueueError> {
        let key = commands_key(node_id);
        let mut c = self.conn().await?;
        // Read and delete in one transaction: a command left between the two would be lost.
        let (list,): (Vec<String>,) = redis::pipe()
            .atomic()
            .lrange(&key, 0, -1)
            .del(&key)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        list.iter()
            .map(|j| serde_json::from_str(j).map_err(|e| QueueError::Malformed(e.to_string())))
            .collect()
    }
}

/// The list of commands waiting for one node.
fn commands_key(node_id: &str) -> String {
    format!("kiln:node:{node_id}:commands")
}
