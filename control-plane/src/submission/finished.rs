//! Jobs done at once: a synchronous conversion the caller wants to download later (Konvrt's
//! `/convert` answered as JSON, Convertly's stored results). The source and the output go to
//! the store and the job is recorded completed, so `/download/{id}`, signed links, usage and
//! the retention sweep treat it like any other job.

use std::collections::BTreeMap;

use kiln_gpu_node::imaging::Converted;
use kiln_protocol::{EncodeReport, ImageParams, JobSpec, Task};

use super::SubmitError;
use crate::db::jobs::NewJob;
use crate::db::submissions::Finished;
use crate::db::JobRow;
use crate::dialect::Dialect;
use crate::AppState;

/// What was converted, to keep.
pub struct Kept<'a> {
    pub account_id: &'a str,
    pub input: &'a [u8],
    pub input_name: Option<&'a str>,
    /// The conversion's settings, as `/convert`'s fields.
    pub fields: BTreeMap<String, String>,
    pub output: &'a Converted,
    pub encode_ms: i64,
    pub dialect: Dialect,
}

/// Store `k`'s source and output and record the completed job; returns its row.
pub async fn keep(state: &AppState, k: Kept<'_>) -> Result<JobRow, SubmitError> {
    let id = uuid::Uuid::now_v7().to_string();
    let source_key = format!("sources/{id}");
    let output_key = format!("outputs/{id}.{}", k.output.format.as_str());
    let put = |key: String, bytes: &[u8]| {
        let store = state.store.clone();
        let bytes = bytes.to_vec();
        async move {
            store
                .put_stream(&key, &mut std::io::Cursor::new(bytes), u64::MAX)
                .await
        }
    };
    let stored = async {
        put(source_key.clone(), k.input).await?;
        put(output_key.clone(), &k.output.bytes).await
    }
    .await;
    if let Err(e) = stored {
        let _ = state.store.delete(&source_key).await;
        return Err(SubmitError::Internal(Box::new(e)));
    }
    let spec = JobSpec {
        id: id.clone(),
        attempt: 1,
        source_key: source_key.clone(),
        output_key: output_key.clone(),
        task: Task::Image(ImageParams { fields: k.fields }),
    };
    let spec_json = serde_json::to_string(&spec).map_err(|e| SubmitError::Internal(e.into()))?;
    let report = EncodeReport {
        encoder: k.output.format.as_str().to_string(),
        decoder: "image".into(),
        passes: 1,
        audio: "none".into(),
        ..Default::default()
    };
    let recorded = state
        .db
        .record_finished(
            &NewJob {
                id: &id,
                account_id: k.account_id,
                kind: "image",
                spec: &spec_json,
                source_key: &source_key,
                output_key: &output_key,
                input_name: k.input_name,
                input_size: k.input.len() as i64,
                codec: None,
                batch_id: None,
                webhook_url: None,
                webhook_progress: false,
                destination: None,
                credits: 0,
                dialect: (k.dialect != Dialect::Native).then(|| k.dialect.name()),
                dialect_data: None,
            },
            &Finished {
                output_size: k.output.bytes.len() as i64,
                width: k.output.width.into(),
                height: k.output.height.into(),
                report: serde_json::to_string(&report).ok(),
                encode_ms: k.encode_ms,
                gpu: false,
                ttl_ms: state.config.output_ttl_secs as i64 * 1000,
            },
        )
        .await;
    if let Err(e) = recorded {
        let _ = state.store.delete(&source_key).await;
        let _ = state.store.delete(&output_key).await;
        return Err(e.into());
    }
    state
        .db
        .get_job(k.account_id, &id)
        .await?
        .ok_or_else(|| SubmitError::Internal("a kept conversion vanished".into()))
}
