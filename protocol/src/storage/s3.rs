//! Sources and outputs in an S3-compatible bucket (the fleet's store), through `object_store`.
//! Writes stream as multipart uploads; an object appears only once its upload completes.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::StreamReader;

use super::{copy_limited, validate_key, ObjectReader, Store, StoreError};

/// What an `s3://bucket[/prefix]?endpoint=…&region=…` store URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub bucket: String,
    /// Without leading or trailing slashes; empty for none.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl StoreUrl {
    /// Parse a store URL (the path and query percent-decoded by the `url` crate).
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| e.to_string())?;
        if u.scheme() != "s3" {
            return Err("not an s3:// URL".into());
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(
                "credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not the URL".into(),
            );
        }
        if u.fragment().is_some() {
            return Err("a store URL has no #fragment".into());
        }
        let bucket = u.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err("no bucket".into());
        }
        let prefix = percent_encoding::percent_decode_str(u.path())
            .decode_utf8()
            .map_err(|_| "the prefix is not UTF-8".to_string())?
            .trim_matches('/')
            .to_string();
        let (mut endpoint, mut region) = (None, None);
        for (k, v) in u.query_pairs() {
            let slot = match k.as_ref() {
                "endpoint" => &mut endpoint,
                "region" => &mut region,
                other => return Err(format!("unknown parameter {other:?}")),
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(format!("{k} is given twice"));
            }
        }
        Ok(Self {
            bucket,
            prefix,
            endpoint,
            region,
        })
    }
}

/// Objects under an optional prefix of one bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    bucket: String,
}

fn backend(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { path, .. } => StoreError::NotFound(path),
        other => StoreError::Io(std::io::Error::other(other.to_string())),
    }
}

impl S3Store {
    /// Parse `s3://bucket[/prefix]?endpoint=…&region=…` (credentials from the usual `AWS_*`
    /// variables) and connect.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let parsed = StoreUrl::parse(url).map_err(|why| {
            StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("KILN_STORAGE_URL {url:?}: {why}"),
            ))
        })?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&parsed.bucket);
        if let Some(endpoint) = &parsed.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Custom endpoints (MinIO, Garage, s3s) address buckets by path.
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &parsed.region {
            builder = builder.with_region(region);
        }
        let inner = builder.build().map_err(|e| {
            StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("KILN_STORAGE_URL {url:?}: {e}"),
            ))
        })?;
        Ok(Self {
            inner: Arc::new(inner),
            prefix: parsed.prefix,
            bucket: parsed.bucket,
        })
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StoreError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectReader, StoreError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self
            .inner
            .get_opts(&self.path(key)?, opts)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
                other => backend(other),
            })?;
        let len = res.range.end - res.range.start;
        let stream = res
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok((Box::new(StreamReader::new(stream)), len))
    }
}

#[async_trait]
impl Store for S3Store {
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
        limit: u64,
    ) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        // BufWriter sends one PUT for small bodies and a multipart upload (10 MiB parts) for
        // large ones, holding at most a part in memory.
        let mut writer = BufWriter::new(self.inner.clone(), path);
        match copy_limited(body, &mut writer, limit).await {
            Ok(n) => {
                writer.shutdown().await?;
                Ok(n)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<u64, StoreError> {
        let mut file = tokio::fs::File::open(src).await?;
        self.put_stream(key, &mut file, u64::MAX - 1).await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        self.get(key, None).await
    }

    async fn open_range(&self, key: &str, range: Range<u64>) -> Result<ObjectReader, StoreError> {
        self.get(key, Some(range)).await
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let meta = self
            .inner
            .head(&self.path(key)?)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
                other => backend(other),
            })?;
        Ok(meta.size)
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    async fn fetch_to_path(&self, key: &str, dest: &Path) -> Result<u64, StoreError> {
        let (mut reader, _) = self.open(key).await?;
        let mut out = tokio::fs::File::create(dest).await?;
        let n = tokio::io::copy(&mut reader, &mut out).await?;
        out.flush().await?;
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list_tree(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let folder = self.path(prefix)?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&folder))
            .map_ok(|m| {
                let full = m.location.to_string();
                full.strip_prefix(&strip).unwrap_or(&full).to_string()
            })
            .try_collect()
            .await
            .map_err(backend)?;
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        let s = S3Store::from_url(
            "s3://media/kiln/prod?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(s.bucket(), "media");
        assert_eq!(
            s.path("outputs/a.mp4").unwrap().as_ref(),
            "kiln/prod/outputs/a.mp4"
        );
        assert!(s.path("../x").is_err());
        let plain = S3Store::from_url("s3://media").unwrap();
        assert_eq!(plain.path("sources/x").unwrap().as_ref(), "sources/x");
        for bad in ["s3://", "s3://?region=x", "s3://b?colour=red", "http://b"] {
            assert!(S3Store::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_urls() {
        let u = StoreUrl::parse(
            "s3://media/kiln/out?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(
            u,
            StoreUrl {
                bucket: "media".into(),
                prefix: "kiln/out".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-1".into()),
            }
        );
        // The endpoint may also be written unencoded.
        let u = StoreUrl::parse("s3://media?endpoint=http://127.0.0.1:9000/").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000/"));
        assert_eq!(u.prefix, "");
        // A percent-encoded prefix is decoded (it used to be kept encoded).
        assert_eq!(
            StoreUrl::parse("s3://media/my%20media/").unwrap().prefix,
            "my media"
        );
        for bad in [
            "s3://",
            "s3:///prefix",
            "http://media",
            "s3://media?bogus=1",
            "s3://media?region=a&region=b",
            "s3://key:secret@media",
            "s3://media?region=a#x",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
