//! Faults a fleet survives: a node SIGKILLed mid-encode, Redis restarted empty mid-batch, a
//! node drained with less time than its job needs.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_encode_loses_no_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 10, "640x360");
    // Two nodes on one host asked for one metrics port that something else holds: both start,
    // each on a free port of its own, registered.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for id in ["node-a", "node-b"] {
        fleet.spawn_node_with(id, &[("KILN_NODE_METRICS_LISTEN", &taken)]);
    }
    let nodes = fleet.wait_nodes(2).await;
    let addrs: Vec<&str> = nodes
        .iter()
        .map(|n| n["metrics_addr"].as_str().unwrap())
        .collect();
    assert!(
        addrs[0] != addrs[1] && !addrs.contains(&taken.as_str()),
        "{addrs:?} (asked {taken})"
    );
    for a in &addrs {
        let r = reqwest::get(format!("http://{a}/metrics")).await.unwrap();
        assert_eq!(r.status(), 200, "{a}");
    }
    for n in &nodes {
        let classes: Vec<&str> = n["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            classes.contains(&"h264") && classes.contains(&"h264:cpu"),
            "{n}"
        );
        assert!(!classes.contains(&"h264:nvenc"), "no NVENC here: {n}");
        assert!(n["capabilities"]["encoders"]
            .as_array()
            .unwrap()
            .contains(&Value::from("libx264")));
        assert_eq!(n["slots"], 1);
    }

    // A job that needs NVENC: no node here has it, and its status says so.
    let nvenc = fleet
        .submit(&clip, &[("codec", "h264"), ("hardware", "nvenc")])
        .await;
    let doc = fleet.status(&nvenc).await;
    assert_eq!(doc["status"], "pending");
    let why = doc["waiting_reason"].as_str().unwrap_or_default();
    assert!(why.contains("NVENC for h264"), "{doc}");

    // The slow preset keeps each encode long enough (seconds) for several progress reports
    // to be seen while polling, and for the kill to land mid-encode.
    let fields = [
        ("codec", "h264"),
        ("quality", "28"),
        ("resolution", "360p"),
        ("preset", "slow"),
    ];
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(fleet.submit(&clip, &fields).await);
    }
    assert_eq!(fleet.status(&ids[0]).await["waiting_reason"], Value::Null);

    // Kill node-a (SIGKILL: no drain, no goodbye) while it encodes a job.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progress_seen = Vec::new();
    let victim = loop {
        let mut found = None;
        for id in &ids {
            let d = fleet.status(id).await;
            if d["status"] == "processing" {
                progress_seen.push(d["progress"].as_f64().unwrap());
            }
            if d["status"] == "processing"
                && d["node_id"].as_str().unwrap_or("").starts_with("node-a")
                && d["progress"].as_f64().unwrap() < 50.0
            {
                found = Some(id.clone());
            }
        }
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "node-a never took a job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fleet.signal("node-a", "KILL");

    let (docs, progress) = fleet.wait_all(&ids).await;
    progress_seen.extend(progress);
    let victim_doc = docs
        .iter()
        .find(|d| d["job_id"] == victim.as_str())
        .unwrap();
    assert!(
        victim_doc["attempts"].as_i64().unwrap() >= 2,
        "the killed node's job ran again: {victim_doc}"
    );
    assert!(victim_doc["node_id"]
        .as_str()
        .unwrap()
        .starts_with("node-b"));
    assert!(
        progress_seen.iter().any(|p| *p > 0.0 && *p < 100.0),
        "live progress was visible while jobs ran: {progress_seen:?}"
    );
    fleet.check_outputs(&docs, 10.0).await;
    // Completed exactly once each, however many attempts ran.
    assert_eq!(
        fleet
            .metric("kiln_jobs_finished_total{status=\"completed\"}")
            .await,
        5.0
    );
    assert!(fleet.metric("kiln_jobs_requeued_total").await >= 1.0);
    assert_eq!(fleet.status(&nvenc).await["status"], "pending");

    // node-b's own metrics endpoint, as it registered it.
    let (_, body) = fleet.get_json("/api/v1/nodes").await;
    let b = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "node-b")
        .unwrap()
        .clone();
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        b["metrics_addr"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics.contains("kiln_node_jobs_total{codec=\"h264\",outcome=\"completed\"}"),
        "{metrics}"
    );

    // SIGTERM: an idle node drains at once, leaves the registry and exits cleanly.
    fleet.signal("node-b", "TERM");
    let status = fleet.wait_exit("node-b", "on SIGTERM").await;
    assert!(status.success(), "{}", fleet.node_log("node-b"));
    let (_, body) = fleet.get_json("/api/v1/nodes").await;
    assert!(
        !body.to_string().contains("\"node-b\""),
        "a drained node leaves the registry: {body}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_batch_loses_no_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 4, "640x360");
    fleet.spawn_node("node-a");
    fleet.wait_nodes(1).await;
    let fields = [("codec", "h264"), ("quality", "28"), ("resolution", "360p")];
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(fleet.submit(&clip, &fields).await);
    }
    // Wait until the batch is under way, then restart Redis empty (no persistence: the worst
    // case — the queue, leases, events and registry are all gone).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = fleet.status(&ids[1]).await;
        if d["status"] != "pending" {
            break;
        }
        assert!(Instant::now() < deadline, "the batch never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.redis.kill();
    let health = fleet.http.get(fleet.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status().as_u16(),
        503,
        "healthz reports the lost queue"
    );
    fleet.redis.restart();

    let (docs, _) = fleet.wait_all(&ids).await;
    assert!(
        docs.iter().any(|d| d["attempts"].as_i64().unwrap() >= 2),
        "the jobs Redis forgot were queued again from the database: {docs:#?}"
    );
    fleet.check_outputs(&docs, 4.0).await;
    assert_eq!(
        fleet
            .metric("kiln_jobs_finished_total{status=\"completed\"}")
            .await,
        4.0,
        "each job completed exactly once"
    );
    // The node re-registered with the new Redis.
    fleet.wait_nodes(1).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_back_what_it_cannot_finish() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 20, "640x360");
    // node-a may keep running jobs for 1 s after SIGTERM, then must hand them back.
    fleet.spawn_node_with("node-a", &[("KILN_DRAIN_TIMEOUT_SECS", "1")]);
    fleet.wait_nodes(1).await;
    let id = fleet
        .submit(&clip, &[("codec", "h264"), ("preset", "slow")])
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.status(&id).await["status"] != "processing" {
        assert!(Instant::now() < deadline, "node-a never started the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.signal("node-a", "TERM");
    let exit = fleet.wait_exit("node-a", "after draining").await;
    assert!(exit.success(), "{}", fleet.node_log("node-a"));
    // Handed back, not abandoned: queued again as attempt 2.
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let doc = fleet.status(&id).await;
        if doc["status"] == "pending" && doc["attempts"] == 2 {
            break doc;
        }
        assert!(Instant::now() < deadline, "not handed back: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        doc["waiting_reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("no live node"),
        "{doc}"
    );
    fleet.spawn_node("node-b");
    let (docs, _) = fleet.wait_all(std::slice::from_ref(&id)).await;
    assert!(docs[0]["node_id"].as_str().unwrap().starts_with("node-b"));
    fleet.check_outputs(&docs, 20.0).await;
    fleet.stop().await;
}
