//! Reading: cursor pages, filters and isolation between accounts; usage; credits and quotas.

use crate::prelude::*;

pub async fn run(t: &Target, s: &super::State) {
    let super::State {
        key,
        reader,
        other,
        compress_id,
        ..
    } = s.clone();
    // --- Lists: pages by cursor, filters, isolation between accounts.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=3&cursor={c}"),
            None => "/api/v1/jobs?limit=3".to_string(),
        };
        let page = t.get(&path, &key).await.json();
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        if !page["has_more"].as_bool().unwrap() {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_string());
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no job twice across pages");
    assert_eq!(
        seen.len(),
        1 + 2 + 1 + 1 + 8 + 2 + 1,
        "every job of the account, once"
    );
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    let cancelled = t.get("/api/v1/jobs?status=cancelled", &key).await.json();
    assert_eq!(cancelled["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(
        t.get("/api/v1/jobs?cursor=zzz", &key).await.code(),
        "bad_request"
    );
    assert_eq!(
        t.get("/api/v1/jobs?limit=0", &key).await.code(),
        "bad_request"
    );
    assert_eq!(
        t.get("/api/v1/jobs?status=done", &key).await.code(),
        "bad_request"
    );
    assert!(t.get("/api/v1/jobs", &other).await.json()["jobs"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        t.get(&format!("/api/v1/jobs/{compress_id}"), &other)
            .await
            .code(),
        "not_found"
    );
    assert_eq!(
        t.get(&format!("/api/v1/status/{compress_id}"), &reader)
            .await
            .status,
        200
    );

    // --- Usage.
    let u = t.get("/api/v1/usage", &key).await.json();
    assert_eq!(u["jobs"]["total"], seen.len());
    assert_eq!(u["jobs"]["cancelled"], 2);
    assert_eq!(u["jobs"]["completed"], seen.len() - 2);
    assert!(u["input_bytes"].as_i64().unwrap() > 0 && u["output_bytes"].as_i64().unwrap() > 0);
    assert!(u["encoded_minutes"].as_f64().unwrap() >= 0.4, "{u}");
    assert!(
        u["cpu_seconds"].as_f64().unwrap() + u["gpu_seconds"].as_f64().unwrap() > 0.0,
        "{u}"
    );
    assert_eq!(
        u["credits_used"],
        seen.len() - 2,
        "cancelled jobs are refunded"
    );
    assert_eq!(
        t.get("/api/v1/usage?from=2020-01-01&to=2020-02-01", &key)
            .await
            .json()["jobs"]["total"],
        0
    );
    assert_eq!(
        t.get("/api/v1/usage?from=yesterday", &key).await.code(),
        "bad_request"
    );
    assert_eq!(t.get("/api/v1/usage", &reader).await.code(), "forbidden");

    // --- Credits and quotas: charged on submit, refunded on failure.
    let r = t
        .post(
            "/api/v1/accounts",
            ADMIN,
            json!({"name": "metered", "credits": 2}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let metered = r.json()["id"].as_str().unwrap().to_string();
    let mkey = t.post("/api/v1/keys", ADMIN, json!({"name": "m", "account_id": metered, "scopes": ["jobs:create", "jobs:read", "usage:read"]})).await.json()["key"].as_str().unwrap().to_string();
    let bad_image = {
        let form = Form::new().part(
            "file",
            Part::bytes(b"\x89PNG\r\n\x1a\n but not really".to_vec()).file_name("bad.png"),
        );
        let r = t
            .call(
                Method::POST,
                "/api/v1/uploads",
                Some(&mkey),
                Body::Form(form),
            )
            .await;
        r.json()["upload_id"].as_str().unwrap().to_string()
    };
    // A good job is charged and kept; a batch beyond the balance is refused.
    let mphoto = t
        .upload(&mkey, &media("photo/rocket.jpg"), "rocket.jpg")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": mphoto}, "outputs": [{"format": "png", "width": 32}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(r.json()["credits_charged"], 1);
    let good = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_job(&mkey, &good).await["status"], "completed");
    assert_eq!(
        t.get("/api/v1/usage", &mkey).await.json()["credits_remaining"],
        1
    );
    let r = t
        .post("/api/v1/jobs", &mkey, json!({"source": {"upload_id": mphoto}, "outputs": [{"format": "png"}, {"format": "jpg"}]}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (402, "payment_required"));
    // A job that fails gives its credit back.
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": bad_image}, "outputs": [{"format": "png"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let failing = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(&mkey, &failing).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "decode_failed");
    assert_eq!(
        t.get("/api/v1/usage", &mkey).await.json()["credits_remaining"],
        1,
        "refunded"
    );
    let r = t
        .call(
            Method::PATCH,
            &format!("/api/v1/accounts/{metered}"),
            Some(ADMIN),
            Body::Json(json!({"monthly_job_quota": 1, "add_credits": 5})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["credits"], 6);
    // Numbers no account can hold are refused, and the account still reads after them (found
    // by schemathesis: a sum past 2^63 turned SQLite's integer into a float, and every read of
    // the account answered 500 from then on).
    for body in [
        json!({"add_credits": i64::MAX}),
        json!({"add_credits": i64::MIN}),
        json!({"credits": i64::MAX}),
        json!({"credits": -1}),
        json!({"monthly_job_quota": -5}),
    ] {
        let r = t
            .call(
                Method::PATCH,
                &format!("/api/v1/accounts/{metered}"),
                Some(ADMIN),
                Body::Json(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{body}"
        );
    }
    assert_eq!(
        t.get("/api/v1/usage", &mkey).await.json()["credits_remaining"],
        6
    );
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": bad_image}, "outputs": [{"format": "png"}]}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        t.call(
            Method::PATCH,
            "/api/v1/accounts/nope",
            Some(ADMIN),
            Body::Json(json!({"credits": 1}))
        )
        .await
        .status,
        404
    );
}
