//! Delivery: downloads (keyed, ranged, pre-signed), signed webhooks retried after 500s,
//! cancellation of a running and a pending job.

use crate::prelude::*;

pub async fn run(t: &Target, dir: &Path, s: &super::State) {
    let super::State {
        key,
        reader,
        other,
        compress_id,
        photo,
        ..
    } = s.clone();
    // --- Downloads: keyed, Range, pre-signed without a key, tampered signatures refused.
    let doc = t.wait_job(&key, &compress_id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["input"]["filename"], "bikes.mp4");
    assert!(doc["output"]["expires_at"].is_string());
    assert!(doc["output"]["compression_ratio"].as_i64().unwrap() > 0);
    let keyed = t
        .get(&format!("/api/v1/download/{compress_id}"), &key)
        .await;
    assert_eq!(keyed.status, 200);
    let signed = doc["signed_download_url"].as_str().unwrap();
    let r = t.call(Method::GET, signed, None, Body::None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.bytes, keyed.bytes,
        "the signed link serves the same output"
    );
    let tampered = signed.replace("signature=", "signature=0");
    assert_eq!(
        t.call(Method::GET, &tampered, None, Body::None)
            .await
            .code(),
        "forbidden"
    );
    let expired_link = signed.replace("expires=", "expires=1");
    assert_eq!(
        t.call(Method::GET, &expired_link, None, Body::None)
            .await
            .code(),
        "forbidden"
    );
    let r = t
        .http
        .get(format!("{}/api/v1/download/{compress_id}", t.base))
        .bearer_auth(&key)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 100);

    // --- Webhooks: signed, retried after 500s with the same event id, attempts visible.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hooks = t.receiver.hooks.lock().unwrap().clone();
        let done: Vec<&Hook> = hooks
            .iter()
            .filter(|h| h.event == "job.completed")
            .collect();
        if done.iter().any(|h| h.answered == 200) {
            assert!(
                hooks.iter().all(|h| h.signature_ok),
                "every webhook is signed with the account's secret"
            );
            assert_eq!(done.len(), 3, "two 500s, then delivered: {done:?}");
            assert!(
                done.iter().all(|h| h.event_id == done[0].event_id),
                "retries keep the event id"
            );
            assert_eq!(
                done.iter().map(|h| h.attempt).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            assert_eq!(done[2].body["type"], "job.completed");
            assert_eq!(done[2].body["data"]["job_id"], compress_id.as_str());
            assert_eq!(done[2].body["data"]["status"], "completed");
            assert!(
                hooks.iter().any(|h| h.event == "job.progress"),
                "progress events were asked for"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no completed webhook: {hooks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let doc = t
        .get(&format!("/api/v1/jobs/{compress_id}"), &key)
        .await
        .json();
    let deliveries = doc["webhook"]["deliveries"].as_array().unwrap();
    let completed = deliveries
        .iter()
        .find(|d| d["event"] == "job.completed")
        .unwrap();
    assert_eq!(
        (
            completed["status"].as_str(),
            completed["attempts"].as_i64(),
            completed["last_status_code"].as_i64()
        ),
        (Some("delivered"), Some(3), Some(200))
    );

    // --- Cancellation: a running job and a pending one behind it.
    let clip = dir.join("long.mp4");
    make_clip(&clip, 30, "1280x720");
    let long = t.upload(&key, &clip, "long.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": long}, "outputs": [{"codec": "h265", "preset": "slow"}, {"codec": "h265", "preset": "slow"}],
                   "webhook_url": format!("{}/hook", t.hooks_base)}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    t.wait_status(&key, &ids[0], "processing").await;
    assert_eq!(
        t.get(&format!("/api/v1/jobs/{}", ids[1]), &key)
            .await
            .json()["status"],
        "pending"
    );
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&reader),
            Body::None
        )
        .await
        .code(),
        "forbidden"
    );
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&other),
            Body::None
        )
        .await
        .code(),
        "not_found"
    );
    for id in ids.iter().rev() {
        let r = t
            .call(
                Method::DELETE,
                &format!("/api/v1/jobs/{id}"),
                Some(&key),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["status"], "cancelled");
    }
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&key),
            Body::None
        )
        .await
        .code(),
        "conflict"
    );
    // The node lets go of the cancelled work: a small job submitted now completes promptly.
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": photo}, "outputs": [{"format": "png", "width": 50}]}),
        )
        .await;
    let after = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    assert_eq!(t.wait_job(&key, &after).await["status"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the cancelled encodes kept the node busy"
    );
    for id in &ids {
        let doc = t.get(&format!("/api/v1/jobs/{id}"), &key).await.json();
        assert_eq!(
            doc["status"], "cancelled",
            "a cancelled job never comes back: {doc}"
        );
        assert_eq!(
            t.get(&format!("/api/v1/download/{id}"), &key).await.code(),
            "conflict"
        );
    }
    assert!(
        t.get(&format!("/api/v1/jobs/{}", ids[1]), &key)
            .await
            .json()["node_id"]
            .is_null(),
        "the pending job never ran"
    );
}
