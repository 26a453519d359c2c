//! Rate limits per key and class, shared by replicas; target quality; nodes; and the OpenAPI
//! check of every exchange the suite made.

use crate::prelude::*;

pub async fn run(t: &Target, s: &super::State) {
    let super::State {
        key,
        acme_account,
        photo,
        ..
    } = s.clone();
    // --- Rate limits: per key and class; headers on every response; shared by replicas.
    let r = t.post("/api/v1/keys", ADMIN, json!({"name": "limited", "account_id": acme_account, "scopes": ["jobs:read", "jobs:create"], "rate_limits": {"read": 4, "submit": 1}})).await;
    let limited = r.json()["key"].as_str().unwrap().to_string();
    let mut remaining = Vec::new();
    for i in 0..4 {
        let base = match (&t.replica, i % 2) {
            (Some(rep), 1) => rep.clone(),
            _ => t.base.clone(),
        };
        let r = t
            .call_at(
                &base,
                Method::GET,
                "/api/v1/jobs?limit=1",
                Some(&limited),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("4"));
        assert!(
            r.header("x-ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 60
        );
        remaining.push(r.header("x-ratelimit-remaining").unwrap());
    }
    // Windows are per minute; a window boundary in the middle restarts the count.
    if remaining != ["3", "2", "1", "0"] {
        eprintln!("rate-limit window rolled over mid-test: {remaining:?}");
    } else {
        let r = t.get("/api/v1/jobs", &limited).await;
        assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(r.header("x-ratelimit-remaining").as_deref(), Some("0"));
        // Writes have their own window.
        let r = t.post("/api/v1/jobs", &limited, json!({"source": {"upload_id": photo}, "outputs": [{"format": "png", "width": 20}]})).await;
        assert_eq!(r.status, 202, "{}", r.json());
        assert_eq!(
            t.post("/api/v1/jobs", &limited, json!({})).await.status,
            429
        );
    }
    assert!(t
        .get("/api/v1/jobs", &key)
        .await
        .header("x-ratelimit-limit")
        .is_some());

    // --- Target quality: `target_vmaf` picks the CRF and reports the VMAF it measured;
    // `encoder_crf` takes the encoder's own scale.
    let tuner = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "tuner", "account_name": "tuning", "scopes": ["jobs:create", "jobs:read"]}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let upload = t
        .upload(&tuner, &media("video/bikes.mp4"), "bikes.mp4")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &tuner,
            json!({"source": {"upload_id": upload}, "outputs": [
                {"codec": "h264", "preset": "veryfast", "resolution": "320x136", "target_vmaf": 85},
                {"codec": "h264", "preset": "ultrafast", "resolution": "160x68", "encoder_crf": 30},
                {"codec": "h264", "preset": "veryfast", "resolution": "320x136", "target_vmaf": 85,
                 "chunk_secs": 3}
            ]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let doc = t.wait_job(&tuner, &ids[0]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (doc["method"].as_str(), doc["target_vmaf"].as_f64()),
        (Some("vmaf"), Some(85.0))
    );
    let v = &doc["vmaf"];
    assert_eq!(v["met"], true, "{doc}");
    assert!(v["achieved"].as_f64().unwrap() >= 84.0, "{doc}");
    assert!((10..=51).contains(&v["crf"].as_i64().unwrap()), "{doc}");
    assert!(v["probes"].as_i64().unwrap() >= 2, "{doc}");
    assert_eq!(doc["encoding"]["vmaf"], *v);
    assert_eq!(v["search"], "title", "{doc}");
    let whole_crf = v["crf"].as_i64().unwrap();
    // The same target in chunks: one CRF searched for the whole title, every chunk at it, the
    // joined title scored.
    let doc = t.wait_job(&tuner, &ids[2]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let v = &doc["vmaf"];
    assert_eq!(
        (v["met"].as_bool(), v["search"].as_str()),
        (Some(true), Some("title")),
        "{doc}"
    );
    assert!(v["achieved"].as_f64().unwrap() >= 84.0, "{doc}");
    assert!((v["crf"].as_i64().unwrap() - whole_crf).abs() <= 1, "{doc}");
    let total = doc["chunks"]["total"].as_u64().unwrap();
    assert!(total >= 2, "{doc}");
    assert_eq!(doc["chunks"]["done"].as_u64(), Some(total), "{doc}");
    assert_eq!(
        doc["encoding"]["chunks"]["total"].as_u64(),
        Some(total),
        "{doc}"
    );
    let doc = t.wait_job(&tuner, &ids[1]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (doc["method"].as_str(), doc["encoder_crf"].as_i64()),
        (Some("encoder_crf"), Some(30))
    );
    assert!(doc["vmaf"].is_null());
    assert_eq!(
        t.post("/api/v1/jobs", &tuner, json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h264", "target_vmaf": 100}]}))
            .await
            .code(),
        "bad_request"
    );

    // --- Nodes (admin) and the OpenAPI document.
    let nodes = t.get("/api/v1/nodes", ADMIN).await;
    assert_eq!(nodes.status, 200);
    assert_eq!(t.get("/api/v1/nodes", &key).await.code(), "forbidden");
    // GPU commands go to a node that drives that GPU; this machine's local node drives none.
    let node = nodes.json()["nodes"][0].clone();
    let local = node["node_id"].as_str().unwrap();
    let (listed, live) = (
        node["capabilities"]["gpus"].as_array().unwrap(),
        node["gpus"].as_array().unwrap(),
    );
    assert_eq!(listed.len(), live.len(), "{node}");
    let absent = listed.len();
    for (path, key, code) in [
        (
            format!("/api/v1/nodes/{local}/gpus/0/enable"),
            key.as_str(),
            "forbidden",
        ),
        (
            "/api/v1/nodes/nowhere/gpus/0/enable".to_string(),
            ADMIN,
            "not_found",
        ),
        (
            format!("/api/v1/nodes/{local}/gpus/{absent}/disable"),
            ADMIN,
            "not_found",
        ),
        (
            format!("/api/v1/nodes/{local}/gpus/first/disable"),
            ADMIN,
            "not_found",
        ),
    ] {
        assert_eq!(t.post(&path, key, json!({})).await.code(), code, "{path}");
    }
    let r = t
        .call(Method::GET, "/api/v1/openapi.json", None, Body::None)
        .await;
    assert_eq!(r.status, 200);
    check_openapi(&r.json(), &t.log.lock().unwrap());
}
