//! The Redis queue and the S3 store against real servers started on loopback, held to the same
//! conformance suites as the embedded default's in-process queue and local folder.

use kiln_protocol::queue::conformance;
use kiln_protocol::queue::EventStream;
use kiln_protocol::storage::conformance as store_conformance;
use kiln_protocol::testing::{RedisServer, S3Server};
use kiln_protocol::{JobQueue, LocalStore, RedisQueue, S3Store};

#[tokio::test]
async fn redis_queue_conforms() {
    let redis = RedisServer::start();
    let url = redis.url();
    conformance::run_all(|max_attempts| {
        let url = url.clone();
        async move {
            let q = RedisQueue::connect(&url, "cp-test", max_attempts)
                .await
                .expect("redis");
            q.purge().await.unwrap();
            q
        }
    })
    .await;
}

#[tokio::test]
async fn redis_queue_survives_a_lost_connection() {
    let mut redis = RedisServer::start();
    let q = RedisQueue::connect(&redis.url(), "cp", 3).await.unwrap();
    assert!(q.epoch_is_new().await.unwrap());
    redis.kill();
    assert!(matches!(
        q.depth().await,
        Err(kiln_protocol::QueueError::Unavailable(_))
    ));
    redis.restart();
    // The same queue object reconnects, and sees that Redis lost its data.
    let mut tries = 0;
    let fresh = loop {
        match q.epoch_is_new().await {
            Ok(v) => break v,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(%e, "retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    };
    assert!(fresh, "a restarted, empty Redis is a new epoch");
    assert!(q
        .receive(10, std::time::Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open_root(dir.path()).await.unwrap();
    store_conformance::run_all(&store).await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let s3 = S3Server::start();
    S3Server::export_env();
    let store = S3Store::from_url(&s3.url()).unwrap();
    store_conformance::run_all(&store).await;
    // Wrong credentials are refused by the server (it enforces SigV4), not silently accepted.
    use kiln_protocol::{Store, StoreError};
    store
        .put_stream("sources/x", &mut &b"abc"[..], 10)
        .await
        .unwrap();
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong");
    let bad = S3Store::from_url(&s3.url()).unwrap();
    S3Server::export_env();
    assert!(matches!(
        bad.size("sources/x").await,
        Err(StoreError::Io(_))
    ));
    assert_eq!(store.size("sources/x").await.unwrap(), 3);
}
