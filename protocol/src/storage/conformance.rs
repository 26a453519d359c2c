//! The conformance suite every [`Store`] passes: the local folder and the S3 bucket alike.

use tokio::io::AsyncReadExt;

use super::{Store, StoreError};

async fn read_all(store: &dyn Store, key: &str) -> Vec<u8> {
    let (mut r, size) = store.open(key).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len() as u64, size, "reported size of {key}");
    out
}

/// Run every check against `store`, which must be empty under `sources/` and `outputs/`.
pub async fn run_all(store: &dyn Store) {
    // Round trip, including a body large enough for a multipart upload.
    let big: Vec<u8> = (0..25u32 << 20).map(|i| (i % 251) as u8).collect();
    let n = store
        .put_stream("sources/big", &mut &big[..], big.len() as u64)
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(store.size("sources/big").await.unwrap(), big.len() as u64);
    assert!(read_all(store, "sources/big").await == big, "round trip");

    // Ranges.
    for (start, end) in [
        (0u64, 1u64),
        (1000, 5000),
        (big.len() as u64 - 10, big.len() as u64),
    ] {
        let (mut r, len) = store.open_range("sources/big", start..end).await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(len, end - start);
        assert_eq!(
            got,
            big[start as usize..end as usize],
            "range {start}..{end}"
        );
    }

    // Over the limit: refused, and no object appears.
    let err = store
        .put_stream("sources/too-big", &mut &big[..1_000_001], 1_000_000)
        .await;
    assert!(
        matches!(err, Err(StoreError::TooLarge { limit: 1_000_000 })),
        "{err:?}"
    );
    assert!(matches!(
        store.open("sources/too-big").await,
        Err(StoreError::NotFound(_))
    ));
    // Exactly at the limit is accepted.
    store
        .put_stream("sources/exact", &mut &big[..1000], 1000)
        .await
        .unwrap();

    // Writing an output twice (a retried job) replaces it.
    store
        .put_stream("outputs/o.mp4", &mut &b"first"[..], 100)
        .await
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("kiln-store-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, b"second attempt").unwrap();
    assert_eq!(store.put_file("outputs/o.mp4", &tmp).await.unwrap(), 14);
    assert_eq!(read_all(store, "outputs/o.mp4").await, b"second attempt");
    let back = tmp.with_extension("back");
    assert_eq!(
        store.fetch_to_path("outputs/o.mp4", &back).await.unwrap(),
        14
    );
    assert_eq!(std::fs::read(&back).unwrap(), b"second attempt");
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&back);

    // Missing keys, invalid keys, deletes.
    assert!(matches!(
        store.open("outputs/none").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.size("outputs/none").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.open("../etc/passwd").await,
        Err(StoreError::InvalidKey(_))
    ));
    for key in ["sources/big", "sources/exact", "outputs/o.mp4"] {
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(matches!(
            store.open(key).await,
            Err(StoreError::NotFound(_))
        ));
    }

    // A tree (a ladder's output folder) is removed whole, and only it.
    let tmp = std::env::temp_dir().join(format!("kiln-tree-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, b"segment").unwrap();
    for key in [
        "outputs/t1/master.m3u8",
        "outputs/t1/v/seg-1.m4s",
        "outputs/t10/keep.m4s",
    ] {
        store.put_file(key, &tmp).await.unwrap();
    }
    let _ = std::fs::remove_file(&tmp);
    assert_eq!(
        store.list_tree("outputs/t1").await.unwrap(),
        ["outputs/t1/master.m3u8", "outputs/t1/v/seg-1.m4s"]
    );
    assert!(store.list_tree("outputs/none").await.unwrap().is_empty());
    store.delete_tree("outputs/t1").await.unwrap();
    store.delete_tree("outputs/t1").await.unwrap();
    for key in ["outputs/t1/master.m3u8", "outputs/t1/v/seg-1.m4s"] {
        assert!(
            matches!(store.size(key).await, Err(StoreError::NotFound(_))),
            "{key}"
        );
    }
    assert_eq!(store.size("outputs/t10/keep.m4s").await.unwrap(), 7);
    store.delete_tree("outputs/t10").await.unwrap();
}
