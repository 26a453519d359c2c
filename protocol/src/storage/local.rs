//! The local-folder store of the embedded default (also a shared filesystem such as NFS).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{copy_limited, validate_key, ObjectReader, Store, StoreError};

/// Objects as files under one root folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub async fn open_root(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn open_file(&self, key: &str) -> Result<(tokio::fs::File, u64), StoreError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => {
                let size = file.metadata().await?.len();
                Ok((file, size))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A temporary sibling path; renamed over the target once complete so readers never see a
    /// half-written object.
    fn temp_path(target: &Path) -> PathBuf {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".part-{}", uuid::Uuid::new_v4().simple()));
        target.with_file_name(name)
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
        limit: u64,
    ) -> Result<u64, StoreError> {
        let target = self.path(key)?;
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let tmp = Self::temp_path(&target);
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let written = copy_limited(body, &mut file, limit).await?;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &target).await?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let (file, size) = self.open_file(key).await?;
        Ok((Box::new(file), size))
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<u64, StoreError> {
        let mut file = tokio::fs::File::open(src).await?;
        self.put_stream(key, &mut file, u64::MAX - 1).await
    }

    async fn open_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<ObjectReader, StoreError> {
        use tokio::io::AsyncSeekExt;
        let (mut file, _) = self.open_file(key).await?;
        file.seek(std::io::SeekFrom::Start(range.start)).await?;
        let len = range.end.saturating_sub(range.start);
        Ok((Box::new(file.take(len)), len))
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.open_file(key).await?.1)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    async fn fetch_to_path(&self, key: &str, dest: &Path) -> Result<u64, StoreError> {
        let (mut reader, _) = self.open(key).await?;
        let mut out = tokio::fs::File::create(dest).await?;
        let n = tokio::io::copy(&mut reader, &mut out).await?;
        out.flush().await?;
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list_tree(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.path(prefix)?;
        let mut keys = Vec::new();
        let mut dirs = vec![(root, prefix.trim_end_matches('/').to_string())];
        while let Some((dir, key)) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(e) = entries.next_entry().await? {
                let name = e.file_name().to_string_lossy().into_owned();
                // Half-written temporaries are not objects yet.
                if name.contains(".part-") {
                    continue;
                }
                let child = format!("{key}/{name}");
                if e.file_type().await?.is_dir() {
                    dirs.push((e.path(), child));
                } else {
                    keys.push(child);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_dir_all(self.path(prefix)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn round_trip_limit_and_keys() {
        let root = tempdir();
        let store = LocalStore::open_root(&root).await.unwrap();
        let data = vec![7u8; 100_000];
        let n = store
            .put_stream("sources/a", &mut &data[..], 100_000)
            .await
            .unwrap();
        assert_eq!(n, 100_000);
        let (mut r, size) = store.open("sources/a").await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!((size, back), (100_000, data.clone()));

        // Over the limit: refused, and nothing (not even a temp file) left behind.
        let err = store.put_stream("sources/b", &mut &data[..], 99_999).await;
        assert!(matches!(err, Err(StoreError::TooLarge { limit: 99_999 })));
        assert!(matches!(
            store.open("sources/b").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(std::fs::read_dir(root.join("sources")).unwrap().count(), 1);

        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a b"] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::InvalidKey(_))),
                "{bad}"
            );
        }
        store.delete("sources/a").await.unwrap();
        store.delete("sources/a").await.unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }
}
