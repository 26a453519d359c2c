//! Keys, accounts and scopes; errors are JSON with stable codes.

use crate::prelude::*;

/// Returns the keys later parts use.
pub async fn run(t: &Target) -> super::Keys {
    // --- Keys, accounts and scopes.
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "acme backend", "account_name": "acme", "scopes": ["jobs:create", "jobs:read", "jobs:cancel", "usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let acme = r.json();
    let key = acme["key"].as_str().unwrap().to_string();
    let acme_account = acme["account_id"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "acme dashboard", "account_id": acme_account, "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let reader = r.json()["key"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "other", "scopes": ["jobs:create", "jobs:read", "jobs:cancel"]}),
        )
        .await;
    let other = r.json()["key"].as_str().unwrap().to_string();
    let r = t.get("/api/v1/keys", ADMIN).await;
    assert_eq!(r.status, 200);
    let listed = r.json();
    assert!(listed["keys"].as_array().unwrap().len() >= 4);
    assert!(
        !r.bytes.windows(key.len()).any(|w| w == key.as_bytes()),
        "keys are never listed"
    );
    for (bad, code) in [
        (json!({"name": "x", "scopes": ["root"]}), 400),
        (json!({"name": "x", "scopes": []}), 400),
        (
            json!({"name": "x", "scopes": ["admin"], "account_id": "nope"}),
            404,
        ),
    ] {
        assert_eq!(t.post("/api/v1/keys", ADMIN, bad).await.status, code);
    }
    assert_eq!(
        t.post(
            "/api/v1/keys",
            &key,
            json!({"name": "x", "scopes": ["admin"]})
        )
        .await
        .code(),
        "forbidden"
    );
    // X-API-Key works as well as Bearer.
    let r = t
        .http
        .get(format!("{}/api/v1/account", t.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let account: Value = r.json().await.unwrap();
    let secret = account["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Rotating it: later webhooks are signed with the new secret (the receiver checks).
    assert_eq!(
        t.call(
            Method::POST,
            "/api/v1/account/webhook-secret",
            Some(&reader),
            Body::None
        )
        .await
        .code(),
        "forbidden"
    );
    let r = t
        .call(
            Method::POST,
            "/api/v1/account/webhook-secret",
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    let rotated = r.json()["webhook_secret"].as_str().unwrap().to_string();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    *t.receiver.secret.lock().unwrap() = rotated;
    assert!(
        t.get("/api/v1/account", &reader).await.json()["webhook_secret"].is_null(),
        "read-only keys do not see the secret"
    );
    // A revoked key stops working at once.
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "temp", "account_id": acme_account, "scopes": ["jobs:read"]}),
        )
        .await;
    let (temp, temp_id) = (
        r.json()["key"].as_str().unwrap().to_string(),
        r.json()["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(t.get("/api/v1/jobs", &temp).await.status, 200);
    let r = t
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{temp_id}"),
            Some(ADMIN),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked_at"].is_string());
    assert_eq!(t.get("/api/v1/jobs", &temp).await.code(), "unauthorized");
    assert_eq!(
        t.call(Method::DELETE, "/api/v1/keys/nope", Some(ADMIN), Body::None)
            .await
            .status,
        404
    );
    // The last admin key cannot be revoked: nobody could manage the server after it.
    let keys = t.get("/api/v1/keys", ADMIN).await.json();
    let admins: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            k["revoked_at"].is_null() && k["scopes"].as_array().unwrap().contains(&json!("admin"))
        })
        .collect();
    assert_eq!(admins.len(), 1, "{keys}");
    let r = t
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{}", admins[0]["id"].as_str().unwrap()),
            Some(ADMIN),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict".to_string()),
        "{}",
        r.json()
    );
    assert_eq!(t.get("/api/v1/jobs", ADMIN).await.status, 200);

    // --- Errors are JSON with stable codes.
    assert_eq!(
        t.call(Method::GET, "/api/v1/jobs", None, Body::None)
            .await
            .code(),
        "unauthorized"
    );
    assert_eq!(
        t.get("/api/v1/jobs", "kiln_wrong").await.code(),
        "unauthorized"
    );
    assert_eq!(t.get("/api/v1/nope", &key).await.code(), "not_found");
    let r = t
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&key),
            Body::Raw("application/json", b"{\"source\":".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = t
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&key),
            Body::Raw("text/plain", b"hi".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media"));
    // Query and path values axum cannot parse answer the API's JSON error too, in each API's
    // shape (schemathesis found them answered as text/plain).
    for (path, code) in [
        ("/api/v1/jobs?limit=99999999999999999999", "bad_request"),
        (
            "/api/v1/stream/x/99999999999999999999/y/master.m3u8",
            "bad_request",
        ),
        (
            "/klipfast/api/v1/jobs?limit=99999999999999999999",
            "invalid_request",
        ),
    ] {
        let r = t.get(path, &key).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(r.code(), code, "{path}: {}", r.json());
    }
    for (bad, code) in [
        (
            json!({"source": {}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"upload_id": "x", "url": "https://example.com/a"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"upload_id": "0190a0a0-0000-7000-8000-000000000000"}, "outputs": [{"codec": "h264"}]}),
            "not_found",
        ),
        (
            json!({"source": {"url": "https://10.0.0.1/a.mp4"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "https://169.254.169.254/latest/meta-data"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "http://example.com/a.mp4"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "file:///etc/passwd"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h266"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}], "webhook_url": "https://192.168.1.1/hook"}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/missing.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}]}),
            "unprocessable",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": []}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}], "bogus": 1}),
            "bad_request",
        ),
    ] {
        let r = t.post("/api/v1/jobs", &key, bad.clone()).await;
        assert_eq!(r.code(), code, "{bad} -> {}", r.json());
    }
    assert_eq!(
        t.post(
            "/api/v1/jobs",
            &reader,
            json!({"source": {"upload_id": "x"}, "outputs": [{"codec": "h264"}]})
        )
        .await
        .code(),
        "forbidden"
    );
    super::Keys {
        key,
        acme_account,
        reader,
        other,
    }
}
