//! Sources that are not uploads — an https URL, an object in the caller's S3 bucket — copied
//! into Kiln's store as a stream with the upload size limit; and outputs copied to the
//! caller's bucket when a job asked for that destination. Every outbound connection goes
//! through [`crate::netguard`].

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::io::StreamReader;

use crate::AppState;

/// Why a source could not be copied in, or a bucket not reached.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request names something Kiln will not fetch (a bad URL, bucket or key).
    #[error("{0}")]
    Invalid(String),
    /// The source is larger than the upload limit.
    #[error("the source exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The remote side failed: unreachable, an error status, no such object, a broken body.
    #[error("{0}")]
    Unreadable(String),
    /// Kiln's own store failed while writing the copy.
    #[error("storing the source failed")]
    Store(#[source] kiln_protocol::StoreError),
}

/// A read error of the remote body, tagged so a failed copy can tell the caller's side
/// (422) from Kiln's own store (500).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RemoteRead(String);

fn remote_read(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(RemoteRead(e.to_string()))
}

/// An object or prefix in a caller's S3-compatible bucket.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Location {
    pub bucket: String,
    /// The object (a source), or the output's key (a destination of one output).
    #[serde(default)]
    pub key: Option<String>,
    /// Destinations: outputs are written as `<prefix><job id>.<ext>` (default no prefix).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `https://…` of an S3-compatible service; default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Omit for a public bucket (requests are then unsigned).
    #[serde(default)]
    pub credentials: Option<S3Credentials>,
}

/// Keys for the caller's bucket. Stored with the job until it is delivered; never returned.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Location {
    /// A client for this bucket, after checking that the endpoint is one Kiln may reach.
    /// Kiln's own AWS credentials are never used for a caller's bucket.
    pub async fn connect(&self, state: &AppState) -> Result<Arc<dyn ObjectStore>, SourceError> {
        let bad = |m: String| SourceError::Invalid(format!("s3: {m}"));
        if self.bucket.trim().is_empty() {
            return Err(bad("bucket is empty".into()));
        }
        // Client options first: `with_allow_http` below writes into them.
        let mut b = AmazonS3Builder::new()
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(Duration::from_secs(state.config.fetch_timeout_secs))
                    .with_connect_timeout(Duration::from_secs(10)),
            )
            .with_bucket_name(&self.bucket)
            .with_region(self.region.as_deref().unwrap_or("us-east-1"));
        let endpoint = match &self.endpoint {
            Some(e) => {
                let url = state.url_policy.check(e).map_err(bad)?;
                b = b
                    .with_endpoint(e.trim_end_matches('/'))
                    .with_allow_http(url.scheme() == "http")
                    .with_virtual_hosted_style_request(false);
                url
            }
            None => reqwest::Url::parse(&format!(
                "https://s3.{}.amazonaws.com",
                self.region.as_deref().unwrap_or("us-east-1")
            ))
            .map_err(|e| bad(e.to_string()))?,
        };
        // The S3 client resolves names itself: check where the endpoint points now.
        if let Some(host) = endpoint.host_str() {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            state
                .url_policy
                .check_host_now(host, endpoint.port_or_known_default().unwrap_or(443))
                .await
                .map_err(bad)?;
        }
        b = match &self.credentials {
            Some(c) => {
                let b = b
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                match &c.session_token {
                    Some(t) => b.with_token(t),
                    None => b,
                }
            }
            None => b.with_skip_signature(true),
        };
        // Connections go through the guarded resolver too, so a name that passed the check
        // above cannot be re-pointed at a private address before the S3 client connects.
        b = b.with_http_connector(GuardedConnector {
            policy: state.url_policy.clone(),
            timeout: Duration::from_secs(state.config.fetch_timeout_secs),
        });
        let store = b.build().map_err(|e| bad(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// Gives the S3 client Kiln's guarded HTTP client (see [`crate::netguard`]).
#[derive(Debug)]
struct GuardedConnector {
    policy: Arc<crate::netguard::UrlPolicy>,
    timeout: Duration,
}

impl object_store::client::HttpConnector for GuardedConnector {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(
            self.policy.client(self.timeout),
        ))
    }
}

fn object_path(key: &str) -> Result<ObjectPath, SourceError> {
    ObjectPath::parse(key.trim_start_matches('/'))
        .map_err(|e| SourceError::Invalid(format!("s3: invalid key {key:?}: {e}")))
}

/// A failed copy into Kiln's store: the remote body's fault (tagged [`RemoteRead`]) or the
/// limit is the caller's; anything else is Kiln's own store failing.
fn store_error(e: kiln_protocol::StoreError, what: &str) -> SourceError {
    use kiln_protocol::StoreError;
    match e {
        StoreError::TooLarge { limit } => SourceError::TooLarge { limit },
        StoreError::Io(io) if io.get_ref().is_some_and(|i| i.is::<RemoteRead>()) => {
            SourceError::Unreadable(format!("could not read the source {what}: {io}"))
        }
        other => SourceError::Store(other),
    }
}

/// Copy `url` into Kiln's store at `key`; returns the size and a file name from the URL.
pub async fn fetch_url(
    state: &AppState,
    url: &str,
    key: &str,
) -> Result<(u64, Option<String>), SourceError> {
    let url = state.url_policy.check(url).map_err(SourceError::Invalid)?;
    let limit = state.config.max_upload_bytes;
    let client = state
        .url_policy
        .client(Duration::from_secs(state.config.fetch_timeout_secs));
    let resp = client.get(url.clone()).send().await.map_err(|e| {
        SourceError::Unreadable(format!(
            "could not fetch the source URL: {}",
            crate::error::chain(&e)
        ))
    })?;
    if !resp.status().is_success() {
        return Err(SourceError::Unreadable(format!(
            "the source URL answered {}",
            resp.status()
        )));
    }
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(SourceError::TooLarge { limit });
    }
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut body = StreamReader::new(resp.bytes_stream().map_err(remote_read));
    let size = state
        .store
        .put_stream(key, &mut body, limit)
        .await
        .map_err(|e| store_error(e, "URL"))?;
    Ok((size, name))
}

/// Copy the caller's object into Kiln's store at `key`; returns the size and its file name.
pub async fn fetch_s3(
    state: &AppState,
    loc: &S3Location,
    key: &str,
) -> Result<(u64, Option<String>), SourceError> {
    let object = loc
        .key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| SourceError::Invalid("s3 source: `key` is required".into()))?;
    let path = object_path(object)?;
    let bucket = loc.connect(state).await?;
    let limit = state.config.max_upload_bytes;
    let got = bucket.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            SourceError::Unreadable(format!("s3 source: no object {object:?} in the bucket"))
        }
        other => SourceError::Unreadable(format!("s3 source: {other}")),
    })?;
    if got.meta.size > limit {
        return Err(SourceError::TooLarge { limit });
    }
    let mut body = StreamReader::new(got.into_stream().map_err(remote_read));
    let size = state
        .store
        .put_stream(key, &mut body, limit)
        .await
        .map_err(|e| store_error(e, "object"))?;
    let name = object.rsplit('/').next().map(str::to_string);
    Ok((size, name))
}

/// Where a destination puts job `job_id`'s output with extension `ext`.
pub fn destination_key(loc: &S3Location, job_id: &str, ext: &str) -> String {
    match &loc.key {
        Some(k) if !k.is_empty() => k.clone(),
        _ => format!(
            "{}{job_id}.{ext}",
            loc.prefix.as_deref().unwrap_or_default()
        ),
    }
}

/// Where a ladder's tree goes in the caller's bucket: the folder `key` names, or
/// `<prefix><job id>`; each file keeps its name under it.
pub fn destination_folder(loc: &S3Location, job_id: &str) -> String {
    match &loc.key {
        Some(k) if !k.trim_matches('/').is_empty() => k.trim_end_matches('/').to_string(),
        _ => format!("{}{job_id}", loc.prefix.as_deref().unwrap_or_default()),
    }
}

/// Copy every file of a ladder's tree (the folder `tree` in Kiln's store) under `folder` in
/// the caller's bucket, the entry manifest `entry_key` last so a reader who sees it finds
/// every segment; returns the bytes copied.
pub async fn deliver_tree(
    state: &AppState,
    loc: &S3Location,
    tree: &str,
    entry_key: &str,
    folder: &str,
) -> Result<u64, String> {
    let mut keys = state
        .store
        .list_tree(tree)
        .await
        .map_err(|e| e.to_string())?;
    keys.retain(|k| k != entry_key);
    keys.push(entry_key.to_string());
    let mut total = 0;
    for key in keys {
        let rel = key
            .strip_prefix(tree)
            .unwrap_or(&key)
            .trim_start_matches('/');
        total += deliver(state, loc, &key, &format!("{folder}/{rel}")).await?;
    }
    Ok(total)
}

/// Copy a finished output from Kiln's store to the caller's bucket, streaming.
pub async fn deliver(
    state: &AppState,
    loc: &S3Location,
    output_key: &str,
    dest_key: &str,
) -> Result<u64, String> {
    let bucket = loc.connect(state).await.map_err(|e| e.to_string())?;
    let path = object_path(dest_key).map_err(|e| e.to_string())?;
    let (mut reader, _) = state
        .store
        .open(output_key)
        .await
        .map_err(|e| e.to_string())?;
    let mut w = object_store::buffered::BufWriter::new(bucket, path);
    let n = tokio::io::copy(&mut reader, &mut w)
        .await
        .map_err(|e| format!("copying to the destination bucket failed: {e}"))?;
    w.shutdown()
        .await
        .map_err(|e| format!("completing the upload to the destination bucket failed: {e}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::StoreError;

    #[test]
    fn a_failing_store_is_kilns_fault_not_the_sources() {
        // A broken remote body is the caller's problem (422)…
        assert!(matches!(
            store_error(StoreError::Io(remote_read("connection reset")), "URL"),
            SourceError::Unreadable(m) if m.contains("connection reset")
        ));
        // …but Kiln's own store failing is Kiln's (it was answered 422 before).
        let disk = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        assert!(matches!(
            store_error(StoreError::Io(disk), "URL"),
            SourceError::Store(StoreError::Io(_))
        ));
        assert!(matches!(
            store_error(StoreError::TooLarge { limit: 5 }, "URL"),
            SourceError::TooLarge { limit: 5 }
        ));
    }
}
