//! The same database checks against SQLite (embedded default) and the real Postgres (fleet).

use kiln_control_plane::db::jobs::{Completion, NewJob};
use kiln_control_plane::db::{Db, JobStatus};

mod common;
use common::ScratchPg;

async fn conformance(db: &Db) {
    // Keys: only the hash is stored; a wrong or revoked key is not accepted.
    let key = "kiln_test_key_0123456789";
    let account = db
        .create_account_with_key("acme", "k1", key, &["jobs:read", "jobs:create"])
        .await
        .unwrap();
    let p = db.authenticate(key).await.unwrap().expect("valid key");
    assert_eq!(p.account_id, account);
    assert!(p.has("jobs:read") && !p.has("admin"));
    assert!(db.authenticate("kiln_wrong").await.unwrap().is_none());
    let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(stored, key);
    assert_eq!(db.count_keys().await.unwrap(), 1);

    let id = uuid::Uuid::now_v7().to_string();
    db.insert_job(&NewJob {
        id: &id,
        account_id: &account,
        kind: "video",
        spec: "{}",
        source_key: "sources/x",
        output_key: "outputs/x.mp4",
        input_name: Some("x.mp4"),
        input_size: 1000,
        codec: Some("h264"),
    })
    .await
    .unwrap();
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempts, job.progress),
        (JobStatus::Pending, 1, 0.0)
    );
    // Another account cannot see it.
    assert!(db.get_job("someone-else", &id).await.unwrap().is_none());

    assert!(db.mark_started(&id, 1, "n1").await.unwrap());
    assert!(db
        .record_progress(&id, 1, 50.0, 30.0, Some(2.0))
        .await
        .unwrap());
    // Progress never goes backwards.
    db.record_progress(&id, 1, 30.0, 30.0, None).await.unwrap();
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!((job.status, job.progress), (JobStatus::Processing, 50.0));
    assert_eq!(job.node_id.as_deref(), Some("n1"));

    // The queue took attempt 1 back (its node died) and queued attempt 2; a late event from
    // attempt 1 is then stale.
    assert!(db
        .mark_requeued(&id, 2, "node n1 stopped heartbeating")
        .await
        .unwrap());
    assert!(
        !db.mark_requeued(&id, 2, "replayed").await.unwrap(),
        "applied once"
    );
    assert!(!db.record_progress(&id, 1, 90.0, 1.0, None).await.unwrap());
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempts, job.progress, job.node_id.clone()),
        (JobStatus::Pending, 2, 0.0, None)
    );
    // An event from a newer attempt than the row knows advances it (its Requeued event may
    // arrive later, through another control-plane replica).
    assert!(db.mark_started(&id, 3, "n2").await.unwrap());
    assert!(!db.mark_requeued(&id, 3, "late").await.unwrap());
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Processing, 3));
    assert!(db.record_progress(&id, 3, 10.0, 30.0, None).await.unwrap());

    // A retryable failure moves to the next attempt; the old attempt's events are then stale.
    assert!(db
        .mark_retry(&id, 3, "storage_failed", "disk")
        .await
        .unwrap());
    let stale = Completion {
        output_size: 10,
        width: 2,
        height: 2,
        duration_s: 1.0,
        report: None,
    };
    assert!(!db.mark_completed(&id, 3, &stale).await.unwrap());
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempts, job.progress),
        (JobStatus::Pending, 4, 0.0)
    );

    // Completion counts once.
    let done = Completion {
        output_size: 400,
        width: 320,
        height: 136,
        duration_s: 10.0,
        report: Some(r#"{"encoder":"libx264"}"#.into()),
    };
    assert!(db.mark_completed(&id, 4, &done).await.unwrap());
    assert!(!db.mark_completed(&id, 4, &done).await.unwrap());
    assert!(
        !db.mark_completed(&id, 5, &done).await.unwrap(),
        "a finished job never moves"
    );
    assert!(!db.mark_failed(&id, 4, "internal", "late").await.unwrap());
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        (job.output_size, job.output_width, job.output_height),
        (Some(400), Some(320), Some(136))
    );
    assert_eq!(job.report, done.report);
    assert_eq!(job.output_duration, Some(10.0));
    assert_eq!(job.progress, 100.0);
    assert!(job.completed_at.is_some() && job.error_code.is_none());
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let db = Db::connect(&url).await.unwrap();
    conformance(&db).await;
    // Migrations are idempotent: connecting again to the same file works.
    Db::connect(&url).await.unwrap();
}

#[tokio::test]
async fn postgres_conforms() {
    let (pg, url) = ScratchPg::create("kiln_test").await;
    let db = Db::connect(&url).await.unwrap();
    conformance(&db).await;
    db.pool.close().await;
    pg.drop_db().await;
}
