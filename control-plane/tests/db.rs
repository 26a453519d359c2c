//! The same database checks against SQLite (embedded default) and the real Postgres (fleet).

use kiln_control_plane::db::batches::BatchRow;
use kiln_control_plane::db::jobs::{Completion, NewJob};
use kiln_control_plane::db::keys::Revoked;
use kiln_control_plane::db::submissions::{NewSubmission, RecordError};
use kiln_control_plane::db::{Db, JobStatus};
use kiln_protocol::JobErrorCode;
use sqlx::Row;

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
        batch_id: None,
        webhook_url: None,
        webhook_progress: false,
        destination: None,
        credits: 0,
        dialect: None,
        dialect_data: None,
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
        .record_progress(&id, 1, 50.0, 30.0, Some(2.0), Some(r#"{"total":3}"#))
        .await
        .unwrap());
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!(job.chunks_live.as_deref(), Some(r#"{"total":3}"#));
    // Progress never goes backwards.
    db.record_progress(&id, 1, 30.0, 30.0, None, None)
        .await
        .unwrap();
    let job = db.get_job(&account, &id).await.unwrap().unwrap();
    assert_eq!((job.status, job.progress), (JobStatus::Processing, 50.0));
    assert_eq!(job.chunks_live, None, "the latest progress holds no chunks");
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
    assert!(!db
        .record_progress(&id, 1, 90.0, 1.0, None, None)
        .await
        .unwrap());
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
    assert!(db
        .record_progress(&id, 3, 10.0, 30.0, None, None)
        .await
        .unwrap());

    // A retryable failure moves to the next attempt; the old attempt's events are then stale.
    assert!(db
        .mark_retry(&id, 3, JobErrorCode::StorageFailed, "disk")
        .await
        .unwrap());
    let stale = Completion {
        output_size: 10,
        width: 2,
        height: 2,
        duration_s: 1.0,
        report: None,
        gpu: false,
        ttl_ms: 1000,
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
        gpu: true,
        ttl_ms: 86_400_000,
    };
    assert!(db.mark_completed(&id, 4, &done).await.unwrap());
    assert!(!db.mark_completed(&id, 4, &done).await.unwrap());
    assert!(
        !db.mark_completed(&id, 5, &done).await.unwrap(),
        "a finished job never moves"
    );
    assert!(!db
        .mark_failed(&id, 4, JobErrorCode::Internal, "late")
        .await
        .unwrap());
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
    assert_eq!(job.gpu, Some(1));
    assert_eq!(job.expires_at, Some(job.completed_at.unwrap() + 86_400_000));
    assert!(
        !db.mark_cancelled(&id).await.unwrap(),
        "a finished job cannot be cancelled"
    );

    // Credits: charged jobs are refunded once, only when failed or cancelled.
    let paying = db.create_account("paying", Some(10), None).await.unwrap();
    assert!(paying
        .webhook_secret
        .as_deref()
        .unwrap()
        .starts_with("whsec_"));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = uuid::Uuid::now_v7().to_string();
        db.insert_job(&NewJob {
            id: &id,
            account_id: &paying.id,
            kind: "image",
            spec: "{}",
            source_key: "sources/y",
            output_key: "outputs/y.png",
            input_name: None,
            input_size: 10,
            codec: None,
            batch_id: Some("b1"),
            webhook_url: None,
            webhook_progress: false,
            destination: None,
            credits: 2,
            dialect: None,
            dialect_data: None,
        })
        .await
        .unwrap();
        ids.push(id);
    }
    assert_eq!(
        db.refund(&ids[0]).await.unwrap(),
        0,
        "a pending job keeps its credits"
    );
    assert!(db.mark_cancelled(&ids[0]).await.unwrap());
    assert!(!db.mark_cancelled(&ids[0]).await.unwrap());
    assert_eq!(db.refund(&ids[0]).await.unwrap(), 2);
    assert_eq!(db.refund(&ids[0]).await.unwrap(), 0, "refunded once");
    let account = db.get_account(&paying.id).await.unwrap().unwrap();
    assert_eq!(account.credits, Some(12));

    // Pages of jobs, newest first, by cursor; by status.
    let first = db.list_jobs(&paying.id, None, None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ids[4], &ids[3]]
    );
    let next = db
        .list_jobs(&paying.id, Some(&first[1].id), None, 10)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ids[2], &ids[1], &ids[0]]
    );
    let cancelled = db
        .list_jobs(&paying.id, None, Some(JobStatus::Cancelled), 10)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(db.batch_jobs(&paying.id, "b1").await.unwrap().len(), 5);
    assert!(db
        .batch_jobs(&account_id_other(db).await, "b1")
        .await
        .unwrap()
        .is_empty());

    // Keys: listed without the key, revoked keys stop authenticating.
    let key = kiln_control_plane::db::keys::generate_key();
    let key_id = db
        .insert_key(
            &paying.id,
            "k",
            &key,
            &["jobs:read".to_string()],
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(db.authenticate(&key).await.unwrap().is_some());
    let listed = db.list_keys(Some(&paying.id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prefix, &key[..12]);
    assert_eq!(db.revoke_key(&key_id).await.unwrap(), Revoked::Done);
    assert!(db.authenticate(&key).await.unwrap().is_none());
    assert_eq!(db.revoke_key("nope").await.unwrap(), Revoked::NoSuchKey);
    // The last live admin key stays; with a second one, either may go, not both.
    let admin = |name: &'static str| {
        let db = db.clone();
        let account = paying.id.clone();
        async move {
            let key = kiln_control_plane::db::keys::generate_key();
            let scopes = vec!["jobs:read".to_string(), "admin".to_string()];
            let id = db
                .insert_key(&account, name, &key, &scopes, &Default::default())
                .await
                .unwrap();
            (id, key)
        }
    };
    let live_admins = db
        .list_keys(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.revoked_at.is_none() && k.scopes.iter().any(|s| s == "admin"))
        .map(|k| k.id)
        .collect::<Vec<_>>();
    for id in &live_admins {
        db.revoke_key(id).await.unwrap();
    }
    let (first, first_key) = admin("admin-1").await;
    assert_eq!(db.revoke_key(&first).await.unwrap(), Revoked::LastAdmin);
    assert!(db.authenticate(&first_key).await.unwrap().is_some());
    let (second, _) = admin("admin-2").await;
    assert_eq!(db.revoke_key(&first).await.unwrap(), Revoked::Done);
    assert_eq!(db.revoke_key(&second).await.unwrap(), Revoked::LastAdmin);

    // The shared secret is created once.
    let s1 = db.shared_secret("t").await.unwrap();
    assert_eq!(db.shared_secret("t").await.unwrap(), s1);

    submissions(db).await;
}

fn new_job<'a>(id: &'a str, account: &'a str, batch: Option<&'a str>, credits: i64) -> NewJob<'a> {
    NewJob {
        id,
        account_id: account,
        kind: "video",
        spec: "{}",
        source_key: "sources/s",
        output_key: "outputs/s.mp4",
        input_name: None,
        input_size: 10,
        codec: Some("h264"),
        batch_id: batch,
        webhook_url: None,
        webhook_progress: false,
        destination: None,
        credits,
        dialect: None,
        dialect_data: None,
    }
}

/// A submission is recorded and charged whole or not at all; taking it back returns its
/// credits; the outbox hands out what the queue never got, once.
async fn submissions(db: &Db) {
    let acct = db.create_account("subs", Some(5), Some(3)).await.unwrap();
    let month = (0, i64::MAX);
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let batch = |id: &str| BatchRow {
        id: id.to_string(),
        account_id: acct.id.clone(),
        archive: true,
        created_at: 1,
    };
    fn submission<'a>(
        account: &'a str,
        jobs: Vec<NewJob<'a>>,
        cost: i64,
        batch: Option<BatchRow>,
    ) -> NewSubmission<'a> {
        NewSubmission {
            account_id: account,
            cost,
            month: (0, i64::MAX),
            batch,
            jobs,
            enqueue_after: 1_000,
        }
    }
    // Over the quota (3 jobs a month): refused, nothing recorded, nothing charged.
    let four: Vec<_> = ids
        .iter()
        .map(|i| new_job(i, &acct.id, Some("bq"), 1))
        .collect();
    let e = db
        .record_submission(&submission(&acct.id, four, 4, Some(batch("bq"))))
        .await;
    assert!(
        matches!(e, Err(RecordError::QuotaReached { used: 0, quota: 3 })),
        "{e:?}"
    );
    // Over the balance (5 credits): refused whole.
    let two: Vec<_> = ids[..2]
        .iter()
        .map(|i| new_job(i, &acct.id, Some("bc"), 3))
        .collect();
    let e = db
        .record_submission(&submission(&acct.id, two, 6, Some(batch("bc"))))
        .await;
    assert!(
        matches!(
            e,
            Err(RecordError::InsufficientCredits {
                cost: 6,
                balance: 5
            })
        ),
        "{e:?}"
    );
    for id in &ids {
        assert!(db.get_job(&acct.id, id).await.unwrap().is_none());
    }
    assert!(db.get_batch(&acct.id, "bq").await.unwrap().is_none());
    assert!(db.get_batch(&acct.id, "bc").await.unwrap().is_none());
    assert_eq!(
        db.get_account(&acct.id).await.unwrap().unwrap().credits,
        Some(5)
    );

    // Within both: every row and the charge, together.
    let two: Vec<_> = ids[..2]
        .iter()
        .map(|i| new_job(i, &acct.id, Some("b2"), 2))
        .collect();
    db.record_submission(&submission(&acct.id, two, 4, Some(batch("b2"))))
        .await
        .unwrap();
    assert_eq!(db.batch_jobs(&acct.id, "b2").await.unwrap().len(), 2);
    assert!(db.get_batch(&acct.id, "b2").await.unwrap().unwrap().archive);
    assert_eq!(
        db.get_account(&acct.id).await.unwrap().unwrap().credits,
        Some(1)
    );
    // The quota now counts them: two more would make four.
    let more: Vec<_> = ids[2..]
        .iter()
        .map(|i| new_job(i, &acct.id, None, 0))
        .collect();
    assert!(matches!(
        db.record_submission(&submission(&acct.id, more, 0, None))
            .await,
        Err(RecordError::QuotaReached { used: 2, quota: 3 })
    ));

    // Recorded but not yet queued: the outbox hands them out once enqueue_after passed, and
    // claims them, so a second look (another replica) finds nothing.
    assert!(
        db.claim_unqueued(999, 60_000, 10).await.unwrap().is_empty(),
        "not yet due"
    );
    let due = db.claim_unqueued(1_000, 60_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|u| &u.id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    assert_eq!(due[0].attempts, 1);
    assert!(db
        .claim_unqueued(1_000, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    // Enqueued: out of the outbox for good.
    db.mark_enqueued(&ids[..1]).await.unwrap();
    assert_eq!(
        db.claim_unqueued(100_000, 60_000, 10)
            .await
            .unwrap()
            .iter()
            .map(|u| &u.id)
            .collect::<Vec<_>>(),
        [&ids[1]]
    );

    // The queue refused it: taken back whole, credits returned.
    db.withdraw_submission(&acct.id, &ids[..2], Some("b2"), 4)
        .await
        .unwrap();
    assert!(db.batch_jobs(&acct.id, "b2").await.unwrap().is_empty());
    assert!(db.get_batch(&acct.id, "b2").await.unwrap().is_none());
    assert_eq!(
        db.get_account(&acct.id).await.unwrap().unwrap().credits,
        Some(5)
    );

    // An unmetered account with no quota: nothing to check, still one transaction.
    let free = db.create_account("free", None, None).await.unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    db.record_submission(&NewSubmission {
        account_id: &free.id,
        cost: 7,
        month,
        batch: None,
        jobs: vec![new_job(&id, &free.id, None, 7)],
        enqueue_after: 1,
    })
    .await
    .unwrap();
    assert_eq!(
        db.get_account(&free.id).await.unwrap().unwrap().credits,
        None
    );
    assert!(matches!(
        db.record_submission(&NewSubmission {
            account_id: "no-such-account",
            cost: 0,
            month,
            batch: None,
            jobs: vec![],
            enqueue_after: 1,
        })
        .await,
        Err(RecordError::NoAccount(_))
    ));
}

async fn account_id_other(db: &Db) -> String {
    db.create_account("other", None, None).await.unwrap().id
}

/// Webhook secrets (accounts' and managed endpoints') are stored sealed: the column never
/// holds the secret, the API layer gets it in the clear, a sealed value opens only under its
/// own record and key, and secrets an earlier version stored in the clear are sealed at the
/// next start.
async fn secrets_at_rest(url: &str) {
    use kiln_control_plane::db::endpoints::Endpoint;
    let key = "11".repeat(32);
    let db = Db::connect_with(url, Some(&key)).await.unwrap();
    let raw = |sql: &'static str, id: String| {
        let db = db.clone();
        async move {
            sqlx::query(sql)
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .try_get::<String, _>(0)
                .unwrap()
        }
    };
    let account = db.create_account("sealed", None, None).await.unwrap();
    let secret = account.webhook_secret.clone().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let stored = raw(
        "SELECT webhook_secret FROM accounts WHERE id = $1",
        account.id.clone(),
    )
    .await;
    assert!(
        !stored.contains(&secret[6..]),
        "the column holds the secret: {stored}"
    );
    let rotated = db
        .rotate_webhook_secret(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rotated.webhook_secret, account.webhook_secret);
    let stored = raw(
        "SELECT webhook_secret FROM accounts WHERE id = $1",
        account.id.clone(),
    )
    .await;
    assert!(!stored.starts_with("whsec_"));

    let endpoint = Endpoint {
        id: format!("ep-{}", account.id),
        account_id: account.id.clone(),
        url: "https://hooks.example.com/k".into(),
        events: vec!["job.completed".into()],
        secret: "whsec_endpoint_secret_0123456789abcdef".into(),
        active: true,
        created_at: 1,
    };
    db.insert_endpoint(&endpoint).await.unwrap();
    let stored = raw(
        "SELECT secret FROM webhook_endpoints WHERE id = $1",
        endpoint.id.clone(),
    )
    .await;
    assert!(!stored.contains("endpoint_secret"), "{stored}");
    assert_eq!(db.endpoint(&endpoint.id).await.unwrap().unwrap(), endpoint);

    // Moved to another record, a sealed value does not open.
    let other = db.create_account("other-sealed", None, None).await.unwrap();
    sqlx::query("UPDATE accounts SET webhook_secret = $1 WHERE id = $2")
        .bind(&stored)
        .bind(&other.id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(db.get_account(&other.id).await.is_err());

    // A secret written in the clear (by an earlier version) reads as it is, and is sealed at
    // the next start.
    let clear = "whsec_written_in_the_clear_0123456789";
    sqlx::query("UPDATE accounts SET webhook_secret = $1 WHERE id = $2")
        .bind(clear)
        .bind(&other.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let got = db.get_account(&other.id).await.unwrap().unwrap();
    assert_eq!(got.webhook_secret.as_deref(), Some(clear));
    let again = Db::connect_with(url, Some(&key)).await.unwrap();
    let stored = raw(
        "SELECT webhook_secret FROM accounts WHERE id = $1",
        other.id.clone(),
    )
    .await;
    assert!(!stored.contains("written_in_the_clear"), "{stored}");
    let got = again.get_account(&other.id).await.unwrap().unwrap();
    assert_eq!(got.webhook_secret.as_deref(), Some(clear));

    // Under another key nothing opens: the database alone does not hold the secrets.
    let wrong = Db::connect_with(url, Some(&"22".repeat(32))).await.unwrap();
    assert!(wrong.get_account(&account.id).await.is_err());
    assert!(wrong.endpoint(&endpoint.id).await.is_err());
    for d in [db, again, wrong] {
        d.pool.close().await;
    }
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let db = Db::connect(&url).await.unwrap();
    conformance(&db).await;
    // Migrations are idempotent: connecting again to the same file works.
    Db::connect(&url).await.unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("sealed.db").display()
    );
    secrets_at_rest(&url).await;
}

#[tokio::test]
async fn postgres_conforms() {
    let (pg, url) = ScratchPg::create("kiln_test").await;
    let db = Db::connect(&url).await.unwrap();
    conformance(&db).await;
    db.pool.close().await;
    pg.drop_db().await;
    let (pg, url) = ScratchPg::create("kiln_sealed").await;
    secrets_at_rest(&url).await;
    pg.drop_db().await;
}
