//! One title across the fleet (`chunk_secs`): the node that takes the job queues its chunks,
//! every node encodes some, a node SIGKILLed mid-chunk loses only that chunk (it runs again
//! elsewhere, once in the output), and a cancel of the title stops every chunk.

use super::*;

/// Frames in a file's video, decoded by the ffprobe CLI.
fn decoded_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl Fleet {
    /// Node ids of running processes that report a busy slot, other than `but` (a killed
    /// node's last report stays in the registry).
    async fn busy_nodes(&self, but: &str) -> Vec<String> {
        let (_, body) = self.get_json("/api/v1/nodes").await;
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| self.nodes.contains_key(n["node_id"].as_str().unwrap()))
            .filter(|n| n["busy"].as_u64().unwrap_or(0) > 0 && n["node_id"] != but)
            .map(|n| n["node_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait until `id` is processing on a node and another node runs one of its chunks;
    /// returns (the title's node, a node running a chunk).
    async fn wait_chunk_running(&self, id: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let d = self.status(id).await;
            if let Some(parent) = d["node_id"]
                .as_str()
                .filter(|_| d["status"] == "processing")
            {
                if let Some(other) = self.busy_nodes(parent).await.into_iter().next() {
                    return (parent.to_string(), other);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no chunk ran on another node: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_in_chunks_spreads_over_the_fleet_and_survives_a_kill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("long.mp4");
    // 60 s at 30 fps with x264's default keyframes (every 250 frames): chunks cut near 10 s.
    make_clip(&clip, 60, "640x360");
    // Sources over 30 s go in chunks unless the job says otherwise.
    for id in ["node-a", "node-b", "node-c"] {
        fleet.spawn_node_with(id, &[("KILN_CHUNK_AUTO_SECS", "30")]);
    }
    let nodes = fleet.wait_nodes(3).await;
    assert!(
        nodes[0]["classes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("chunk:h264")),
        "{}",
        nodes[0]
    );
    let fields = [
        ("codec", "h264"),
        ("preset", "slow"),
        ("resolution", "360p"),
        ("chunk_secs", "10"),
    ];
    let id = fleet.submit(&clip, &fields).await;
    let (parent, victim) = fleet.wait_chunk_running(&id).await;
    // While the title encodes, its document counts its chunks live.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = fleet.status(&id).await;
        let c = &d["chunks"];
        if c["running"].as_u64().unwrap_or(0) >= 1 {
            let sum: u64 = ["done", "running", "queued"]
                .iter()
                .map(|k| c[k].as_u64().unwrap())
                .sum();
            assert_eq!(sum, c["total"].as_u64().unwrap(), "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "no live chunk counts: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.signal(&victim, "KILL");
    let mut killed = fleet.nodes.remove(&victim).unwrap();
    let _ = killed.wait();

    let (docs, _) = fleet.wait_all(std::slice::from_ref(&id)).await;
    let doc = &docs[0];
    assert_eq!(
        doc["status"],
        "completed",
        "{doc}\n--- {parent} ---\n{}",
        fleet.node_log(&parent)
    );
    assert_eq!(doc["node_id"], parent.as_str(), "{doc}");
    let chunks = &doc["encoding"]["chunks"];
    let list = chunks["chunks"].as_array().unwrap();
    eprintln!("killed {victim} mid-chunk; the title's node {parent}; chunks: {chunks}");
    assert!((5..=8).contains(&list.len()), "{doc}");
    assert_eq!(chunks["total"], list.len(), "{doc}");
    let frames: u64 = list.iter().map(|c| c["frames"].as_u64().unwrap()).sum();
    assert_eq!(frames, 1800, "{doc}");
    let mut by: Vec<&str> = list.iter().map(|c| c["node"].as_str().unwrap()).collect();
    by.sort();
    by.dedup();
    assert!(by.len() >= 2, "chunks ran on one node only: {doc}");
    // The killed node's chunk ran again, on a node that lived.
    assert!(
        list.iter()
            .any(|c| c["attempts"].as_u64().unwrap() >= 2 && c["node"] != victim.as_str()),
        "no chunk was taken over from {victim}: {doc}"
    );
    let counts = &doc["chunks"];
    assert_eq!(counts["done"], counts["total"], "{doc}");
    assert!(counts["failed"].as_u64().unwrap() >= 1, "{doc}");
    fleet.check_outputs(&docs, 60.0).await;
    let out = fleet.dir.path().join(format!("{id}.mp4"));
    assert_eq!(decoded_frames(&out), 1800);

    // Not asked: chunked because the source is longer than the nodes' 30 s, in 30 s chunks;
    // `chunk_secs=0` keeps a title whole.
    let quick = [
        ("codec", "h264"),
        ("preset", "ultrafast"),
        ("resolution", "180p"),
    ];
    let auto = fleet.submit(&clip, &quick).await;
    let mut whole_fields = quick.to_vec();
    whole_fields.push(("chunk_secs", "0"));
    let whole = fleet.submit(&clip, &whole_fields).await;
    // A ladder too: 30 s chunks on its 4 s segments (120 frames) are 8 segments, 32 s; two
    // chunks of two renditions.
    let ladder = fleet
        .submit(
            &clip,
            &[
                ("format", "hls"),
                ("codec", "h264"),
                ("preset", "ultrafast"),
                ("renditions", "240p@300,180p@q30"),
            ],
        )
        .await;
    let (docs, _) = fleet.wait_all(&[auto, whole, ladder]).await;
    let l = &docs[2];
    assert_eq!(l["status"], "completed", "{l}");
    let chunks = &l["encoding"]["chunks"];
    assert_eq!(chunks["auto"], true, "{l}");
    assert_eq!(chunks["total"], 4, "{l}");
    let frames: Vec<u64> = chunks["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["frames"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, [960, 960, 840, 840], "{l}");
    assert_eq!(
        l["encoding"]["renditions"].as_array().unwrap().len(),
        2,
        "{l}"
    );
    let chunks = &docs[0]["encoding"]["chunks"];
    assert_eq!(chunks["auto"], true, "{}", docs[0]);
    assert_eq!(chunks["chunk_secs"], 30.0, "{}", docs[0]);
    assert_eq!(chunks["total"], 2, "{}", docs[0]);
    assert_eq!(docs[1]["status"], "completed", "{}", docs[1]);
    assert!(docs[1]["encoding"]["chunks"].is_null(), "{}", docs[1]);

    // A cancel of a title stops its chunks on every node.
    let id = fleet.submit(&clip, &fields).await;
    let (parent, _) = fleet.wait_chunk_running(&id).await;
    let r = fleet
        .http
        .delete(fleet.url(&format!("/api/v1/jobs/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = fleet.busy_nodes("").await;
        if busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still busy after the cancel: {busy:?}\n{}",
            fleet.node_log(&parent)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fleet.status(&id).await["status"], "cancelled");
    fleet.stop().await;
}
