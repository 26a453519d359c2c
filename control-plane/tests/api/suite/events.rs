//! Live progress over Server-Sent Events, the queue view, and draining a node over the API.
//! In fleet mode the account stream is read from the other replica than the one the job was
//! submitted to, and resumed with `Last-Event-ID` on the first: the feed is shared.

use crate::prelude::*;

/// One event off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub data: Value,
}

/// An open event stream, read as it arrives.
pub struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    /// The next event, or `None` when the server ended the stream; panics after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim_start().into();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim_start().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Event {
                    id,
                    kind,
                    data: serde_json::from_str(&data).expect("each event's data is JSON"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {wait:?}; have {:?}", self.buf))
                .expect("a readable stream")?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events until one of `job` is `kind` (inclusive), skipping other jobs'.
    pub async fn until(&mut self, job: &str, kind: &str) -> Vec<Event> {
        let mut got = Vec::new();
        loop {
            let e = self
                .next(Duration::from_secs(120))
                .await
                .unwrap_or_else(|| panic!("stream ended before {kind}: {got:?}"));
            if e.data["id"] != job {
                continue;
            }
            let done = e.kind == kind;
            got.push(e);
            if done {
                return got;
            }
        }
    }
}

/// Open `path` on `base` (recorded for the OpenAPI check); the status and, on 200, the stream.
pub async fn open(
    t: &Target,
    base: &str,
    path: &str,
    key: Option<&str>,
    last_id: Option<&str>,
) -> (u16, Option<Stream>) {
    let mut req = t.http.get(format!("{base}{path}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let json_body = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    if status != 200 {
        let body = resp.bytes().await.unwrap();
        t.log.lock().unwrap().push(Exchange {
            method: "get".into(),
            path: path.split('?').next().unwrap().into(),
            status,
            json: json_body.then(|| serde_json::from_slice(&body).unwrap()),
        });
        return (status, None);
    }
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    t.log.lock().unwrap().push(Exchange {
        method: "get".into(),
        path: path.split('?').next().unwrap().into(),
        status,
        json: None,
    });
    (
        status,
        Some(Stream {
            resp,
            buf: String::new(),
        }),
    )
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn id_order(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').expect("ms-seq ids");
    (a.parse().unwrap(), b.parse().unwrap())
}

async fn submit_clip(t: &Target, key: &str, clip: &Path) -> String {
    let upload = t.upload(key, clip, "events.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            key,
            json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h264", "resolution": "240p"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    r.json()["jobs"][0]["id"].as_str().unwrap().to_string()
}

pub async fn run(t: &Target, dir: &Path, s: &super::State) {
    let key = t.own_account_key("events", "events-co").await;
    let clip = dir.join("events.mp4");
    make_clip(&clip, 4, "320x240");
    let other_replica = t.replica.clone().unwrap_or_else(|| t.base.clone());

    // --- The account stream, on the replica the job is not submitted to.
    let (status, stream) = open(t, &other_replica, "/api/v1/events", Some(&key), None).await;
    assert_eq!(status, 200);
    let mut live = stream.unwrap();
    let job = submit_clip(t, &key, &clip).await;
    let first = live.until(&job, "job.completed").await;
    let k = kinds(&first);
    assert_eq!(k[0], "job.created", "{k:?}");
    assert_eq!(k[1], "job.started", "{k:?}");
    assert_eq!(*k.last().unwrap(), "job.completed");
    assert!(
        k[2..k.len() - 1].iter().all(|k| *k == "job.progress"),
        "only progress between start and completion: {k:?}"
    );
    assert_eq!(first[0].data["status"], "pending");
    assert_eq!(first[1].data["status"], "processing");
    let done = &first.last().unwrap().data;
    assert_eq!(done["status"], "completed");
    assert!(done["output_size"].as_i64().unwrap() > 0);
    let ids: Vec<(u64, u64)> = first.iter().map(|e| id_order(&e.id)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let mut last_progress = 0.0;
    for e in first.iter().filter(|e| e.kind == "job.progress") {
        let p = e.data["progress"].as_f64().unwrap();
        assert!(p >= last_progress, "progress only moves forward");
        last_progress = p;
    }
    drop(live);

    // --- Resume after `job.created` on the other replica: exactly the rest, same ids.
    let (status, stream) = open(t, &t.base, "/api/v1/events", Some(&key), Some(&first[0].id)).await;
    assert_eq!(status, 200);
    let rest = stream.unwrap().until(&job, "job.completed").await;
    assert_eq!(
        rest.iter().map(|e| (&e.id, &e.kind)).collect::<Vec<_>>(),
        first[1..]
            .iter()
            .map(|e| (&e.id, &e.kind))
            .collect::<Vec<_>>(),
        "a resumed stream replays what was missed, in order"
    );

    // --- The job's own stream: a snapshot, then it ends (the job is done).
    let path = format!("/api/v1/jobs/{job}/events");
    let (status, stream) = open(t, &t.base, &path, Some(&key), None).await;
    assert_eq!(status, 200);
    let mut one = stream.unwrap();
    let snap = one.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(snap.kind, "job.snapshot");
    assert_eq!(snap.data["status"], "completed");
    assert!(one.next(Duration::from_secs(10)).await.is_none(), "it ends");
    // Resumed from its start: started … completed, then it ends.
    let (_, stream) = open(t, &other_replica, &path, Some(&key), Some(&first[0].id)).await;
    let mut one = stream.unwrap();
    let mut replay = Vec::new();
    while let Some(e) = one.next(Duration::from_secs(10)).await {
        replay.push(e);
    }
    assert_eq!(kinds(&replay), kinds(&first[1..]));

    // --- Refusals.
    let (status, _) = open(t, &t.base, &path, Some(&s.other), None).await;
    assert_eq!(status, 404, "another account's job");
    let (status, _) = open(t, &t.base, &path, None, None).await;
    assert_eq!(status, 401);
    let (status, _) = open(
        t,
        &t.base,
        "/api/v1/events?last_event_id=yesterday",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = open(t, &t.base, "/api/v1/events", Some(&key), Some("12-x")).await;
    assert_eq!(status, 400);

    // --- Drain the node over the API: it takes no new job until resumed.
    let nodes = t.get("/api/v1/nodes", ADMIN).await.json();
    let node = nodes["nodes"][0]["node_id"].as_str().unwrap().to_string();
    let drain = format!("/api/v1/nodes/{node}/drain");
    let r = t.call(Method::POST, &drain, Some(&key), Body::None).await;
    assert_eq!(r.status, 403, "admin only");
    let r = t
        .call(
            Method::POST,
            "/api/v1/nodes/no-such-node/drain",
            Some(ADMIN),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = t.call(Method::POST, &drain, Some(ADMIN), Body::None).await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(r.json()["command"], "drain");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = t.get("/api/v1/nodes", ADMIN).await.json();
        let me = n["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == node.as_str())
            .unwrap()
            .clone();
        if me["state"] == "drained" {
            break;
        }
        assert!(Instant::now() < deadline, "the node never drained: {me}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let waiting = submit_clip(t, &key, &clip).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let doc = t.get(&format!("/api/v1/jobs/{waiting}"), &key).await.json();
    assert_eq!(
        doc["status"], "pending",
        "a drained node takes no job: {doc}"
    );
    let r = t.get("/api/v1/queue", &key).await;
    assert_eq!(r.status, 403, "the queue view is the operators'");
    let q = t.get("/api/v1/queue", ADMIN).await.json();
    assert!(q["waiting"].as_u64().unwrap() >= 1, "{q}");
    assert!(
        q["classes"].as_array().unwrap().iter().any(|c| c["class"]
            .as_str()
            .unwrap()
            .starts_with("h264")
            && c["waiting"].as_u64().unwrap() >= 1),
        "{q}"
    );
    assert!(q["dead_letters"].as_i64().unwrap() >= 0);
    let r = t
        .call(
            Method::POST,
            &format!("/api/v1/nodes/{node}/resume"),
            Some(ADMIN),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 202);
    let doc = t.wait_job(&key, &waiting).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let n = t.get("/api/v1/nodes", ADMIN).await.json();
    assert!(n["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node_id"] == node.as_str() && n["state"] == "ready"));
}
