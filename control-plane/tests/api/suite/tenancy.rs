//! Tenancy: another account's job, upload, batch, archive, saved credential, managed webhook and
//! signed URL are all out of reach. Every operation of the published document that takes an id
//! is called with a second account's key and the first account's ids (404 or 403, never
//! anything else), the first account's own key reaching the same ids; afterwards the first
//! account's things are still there.

use crate::prelude::*;

/// The first account's things.
struct Owned {
    job: String,
    upload: String,
    batch: String,
    credential: String,
    webhook: String,
    signed_download: String,
}

/// A key on a new account of its own with every scope but admin.
async fn tenant(t: &Target, name: &str) -> String {
    let scopes: Vec<&str> = kiln_control_plane::db::keys::ALL_SCOPES
        .iter()
        .copied()
        .filter(|s| *s != "admin")
        .collect();
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": name, "account_name": name, "scopes": scopes}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()["key"].as_str().unwrap().to_string()
}

async fn own_things(t: &Target, a: &str) -> Owned {
    let upload = t
        .upload(a, &media("photo/chelsea.png"), "chelsea.png")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            a,
            json!({"source": {"upload_id": upload}, "outputs": [{"format": "webp", "width": 32}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let job = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(a, &job).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let r = t
        .post(
            "/api/v1/batches",
            a,
            json!({"sources": [{"upload_id": upload}], "formats": ["jpg"], "sizes": ["40"], "archive": true}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let batch = r.json()["batch_id"].as_str().unwrap().to_string();
    for j in r.json()["jobs"].as_array().unwrap() {
        t.wait_job(a, j["id"].as_str().unwrap()).await;
    }
    let cred = t.convertrilo_s3(json!({}));
    let r = t
        .post(
            "/convertrilo/ondemand/credentials/s3",
            a,
            json!({"name": "tenant-a-bucket", "accessKeyId": cred["accessKeyId"],
                   "secretAccessKey": cred["secretAccessKey"], "region": "us-east-1",
                   "endpoint": cred["endpoint"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let r = t
        .post(
            "/convertrilo/webhooks",
            a,
            json!({"url": format!("{}/tenant-a-hook", t.hooks_base), "events": ["job.completed"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let webhook = r.json()["id"].as_str().unwrap().to_string();
    Owned {
        job,
        upload,
        batch,
        credential: "tenant-a-bucket".into(),
        webhook,
        signed_download: doc["signed_download_url"].as_str().unwrap().to_string(),
    }
}

/// `path` with its parameters filled from the first account's things.
fn fill(path: &str, o: &Owned) -> String {
    let id = if path.starts_with("/api/v1/batches/") {
        &o.batch
    } else if path.starts_with("/convertrilo/ondemand/credentials/") {
        &o.credential
    } else if path.starts_with("/convertrilo/webhooks/") {
        &o.webhook
    } else {
        &o.job
    };
    let mut out = String::new();
    for seg in path.split('/').skip(1) {
        out.push('/');
        out.push_str(match seg {
            "{id}" | "{jobId}" | "{job_id}" => id,
            "{file}" => "master.m3u8",
            "{expires}" => "4102444800",
            "{signature}" => "00",
            "{node_id}" => "no-such-node",
            "{gpu}" => "0",
            s => s,
        });
    }
    out
}

pub async fn run(t: &Target, _dir: &Path, _s: &super::State) {
    let a = tenant(t, "tenant-a").await;
    let b = tenant(t, "tenant-b").await;
    let o = own_things(t, &a).await;

    // --- Every operation that takes an id, from the published document.
    let doc = t.get("/api/v1/openapi.json", &a).await.json();
    let mut swept = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        for method in ops.as_object().unwrap().keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let url = fill(path, &o);
            let body = match m {
                Method::GET | Method::DELETE | Method::HEAD => Body::None,
                _ => Body::Json(json!({})),
            };
            // The event streams are opened and left at once: the first answer is enough.
            let r = if path.ends_with("/events") {
                let r = t
                    .http
                    .get(format!("{}{url}", t.base))
                    .bearer_auth(&b)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            } else {
                t.call(m.clone(), &url, Some(&b), body).await.status
            };
            assert!(
                r == 403 || r == 404,
                "{method} {url} with another account's key answered {r}"
            );
            swept += 1;
        }
    }
    assert!(swept >= 20, "only {swept} operations take an id");
    eprintln!("tenancy: {swept} operations that take an id swept");

    // The ids are right: the owner reaches what the other account cannot.
    for path in [
        format!("/api/v1/jobs/{}", o.job),
        format!("/api/v1/jobs/{}/download", o.job),
        format!("/api/v1/download/{}", o.job),
        format!("/api/v1/status/{}", o.job),
        format!("/api/v1/batches/{}", o.batch),
        format!("/api/v1/batches/{}/archive", o.batch),
        "/convertrilo/webhooks".to_string(),
    ] {
        let r = t.get(&path, &a).await;
        assert!(
            r.status == 200 || r.status == 302,
            "GET {path} as its owner: {} {}",
            r.status,
            r.json()
        );
    }

    // --- An upload is used only by its account.
    let r = t
        .post(
            "/api/v1/jobs",
            &b,
            json!({"source": {"upload_id": o.upload}, "outputs": [{"format": "png", "width": 20}]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.json());
    let r = t
        .post(
            "/api/v1/batches",
            &b,
            json!({"sources": [{"upload_id": o.upload}], "formats": ["jpg"]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.json());

    // --- A signed URL opens its own job only: its signature on another job, or with
    // another expiry, is refused.
    let r = t
        .post(
            "/api/v1/jobs",
            &b,
            json!({"source": {"url": format!("{}/files/rocket.jpg", t.hooks_base)}, "outputs": [{"format": "png", "width": 20}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let b_job = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    t.wait_job(&b, &b_job).await;
    let moved = o.signed_download.replace(&o.job, &b_job);
    assert_ne!(moved, o.signed_download);
    assert_eq!(
        t.call(Method::GET, &moved, None, Body::None).await.status,
        403
    );
    assert_eq!(
        t.call(Method::GET, &o.signed_download, None, Body::None)
            .await
            .status,
        200
    );

    // --- Lists show only the caller's own.
    let jobs = t.get("/api/v1/jobs?limit=100", &b).await.json();
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["id"] != o.job.as_str()));
    let hooks = t.get("/convertrilo/webhooks", &b).await.json();
    assert_eq!(hooks["webhooks"].as_array().unwrap().len(), 0, "{hooks}");
    let creds = t
        .get("/convertrilo/ondemand/credentials/s3", &b)
        .await
        .json();
    assert_eq!(creds["credentials"].as_array().unwrap().len(), 0, "{creds}");

    // --- After all that, the first account's things are as they were.
    let doc = t.get(&format!("/api/v1/jobs/{}", o.job), &a).await.json();
    assert_eq!(doc["status"], "completed", "{doc}");
    let hooks = t.get("/convertrilo/webhooks", &a).await.json();
    assert_eq!(hooks["webhooks"].as_array().unwrap().len(), 1, "{hooks}");
    let creds = t
        .get("/convertrilo/ondemand/credentials/s3", &a)
        .await
        .json();
    assert_eq!(creds["credentials"].as_array().unwrap().len(), 1, "{creds}");
}
