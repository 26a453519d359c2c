//! `kiln-bench chunks --nodes 1,2,4`: the same long title through a real fleet on this
//! machine — a control plane in fleet mode (its own `redis-server`, SQLite, a shared
//! `file://` store) and `kiln-gpu-node run` processes, every node pinned with `taskset` to the
//! same share of the cores (the cores over the most nodes timed: 16 cores and up to 8 nodes
//! make 2-core nodes) — whole on one node against chunked on N nodes, timed from submission to
//! completion through the API. N nodes add N shares of cores, as a fleet adds machines: the
//! speedup over the whole encode is the fleet's, and N× is linear. What the slot table leaves
//! out, this counts: the queue, the chunks' storage round trips, the title node's waits and
//! the join.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_control_plane::{start, Config, Running};
use kiln_protocol::testing::RedisServer;
use serde_json::Value;

const KEY: &str = "kiln_bench_chunks_key_0123456789";

/// A fleet on this machine: the control plane, its Redis, the store, and the nodes running.
struct Fleet {
    _redis: RedisServer,
    _running: Running,
    base: String,
    http: reqwest::Client,
    dir: PathBuf,
    nodes: Vec<Child>,
    /// Sets of nodes started so far (each set's ids are new: a killed node's last report
    /// stays in the registry for a while).
    rounds: u32,
}

impl Fleet {
    async fn start(dir: &Path) -> Result<Self, String> {
        let redis = RedisServer::start();
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.join("data"),
            bootstrap_key: Some(KEY.into()),
            redis_url: Some(redis.url()),
            storage_url: Some(format!("file://{}", store.display())),
            local_slots: Some(0),
            ..Config::default()
        };
        let running = start(config).await.map_err(|e| format!("{e:#}"))?;
        Ok(Self {
            base: format!("http://{}/api/v1", running.addr),
            _redis: redis,
            _running: running,
            http: reqwest::Client::new(),
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            rounds: 0,
        })
    }

    /// Start `n` nodes, node `i` pinned to `cpus[i]`, and wait until all report.
    async fn nodes(&mut self, cpus: &[String]) -> Result<(), String> {
        self.stop_nodes();
        let bin = node_binary()?;
        self.rounds += 1;
        let mut ids = Vec::new();
        for (i, set) in cpus.iter().enumerate() {
            let id = format!("bench-r{}-{i}", self.rounds);
            let log = std::fs::File::create(self.dir.join(format!("{id}.log")))
                .map_err(|e| e.to_string())?;
            let child = Command::new("taskset")
                .args(["-c", set])
                .arg(&bin)
                .arg("run")
                .env("REDIS_URL", self._redis.url())
                .env(
                    "KILN_STORAGE_URL",
                    format!("file://{}", self.dir.join("store").display()),
                )
                .env("KILN_NODE_ID", &id)
                .env("KILN_NODE_SLOTS", "1")
                .env("KILN_NODE_METRICS_LISTEN", "127.0.0.1:0")
                .env("KILN_CHUNK_AUTO_SECS", "0")
                .env("KILN_IMAGE_RESIZER", "cpu")
                .env("KILN_SCRATCH_DIR", self.dir.join("scratch").join(&id))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("taskset {}: {e}", bin.display()))?;
            self.nodes.push(child);
            ids.push(id);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.get("/nodes").await?;
            let live = body["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|n| ids.iter().any(|id| n["node_id"] == id.as_str()))
                        .count()
                })
                .unwrap_or(0);
            if live == ids.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{live} of {} nodes reported in 60 s", ids.len()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop_nodes(&mut self) {
        for mut c in self.nodes.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        crate::api::get(&self.http, &self.base, KEY, path).await
    }

    /// Submit `title` with `fields` and wait for it: seconds from submission to completion,
    /// and the chunks it was cut into.
    async fn time(&self, title: &[u8], fields: &[(&str, String)]) -> Result<(f64, u64), String> {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let id =
            crate::api::submit(&self.http, &self.base, KEY, "title.mp4", title, &fields).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let d = self.get(&format!("/jobs/{id}")).await?;
            match d["status"].as_str() {
                Some("completed") => {
                    let chunks = d["chunks"]["total"].as_u64().unwrap_or(1);
                    if std::env::var_os("KILN_BENCH_VERBOSE").is_some() {
                        for c in d["encoding"]["chunks"]["chunks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            eprintln!(
                                "  chunk {} on {} in {} s ({} frames)",
                                c["index"], c["node"], c["secs"], c["frames"]
                            );
                        }
                    }
                    return Ok((started.elapsed().as_secs_f64(), chunks));
                }
                Some("failed" | "cancelled") => return Err(format!("the title failed: {d}")),
                _ => {}
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_nodes();
    }
}

/// `kiln-gpu-node` beside this binary (`cargo build --release -p kiln-gpu-node -p kiln-bench`).
fn node_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("kiln-gpu-node");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p kiln-gpu-node -p kiln-bench",
            bin.display()
        ))
    }
}

/// The cores each of `n` nodes is pinned to, `share` cores each of `cores` (wrapping round
/// past the last core: nodes then share cores, and the table says so).
pub fn pins(n: usize, share: usize, cores: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..share.min(cores))
                .map(|k| ((i * share + k) % cores).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// One row per codec: the whole encode on one node pinned to every core, then the chunked
/// encode on each of `counts` nodes, as speedups; `fields(codec)` are the job's settings.
pub fn table(
    title: &Path,
    codecs: &[String],
    counts: &[usize],
    chunk_secs: f64,
    fields: &dyn Fn(&str) -> Vec<(&'static str, String)>,
) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut fleet = Fleet::start(dir.path()).await?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let most = counts.iter().copied().max().unwrap_or(1);
        let share = (cores / most).max(1);
        let bytes = std::fs::read(title).map_err(|e| e.to_string())?;
        println!(
            "node processes of {share} core(s) each, pinned with taskset ({cores} cores{}):",
            if most * share > cores {
                "; more nodes than cores: they share"
            } else {
                ""
            }
        );
        println!(
            "{:<6} {:>9} {}",
            "codec",
            "whole s",
            counts
                .iter()
                .map(|n| format!("{:>22}", format!("{n} node(s) × (linear)")))
                .collect::<Vec<_>>()
                .join("")
        );
        for codec in codecs {
            let mut f = fields(codec);
            fleet.nodes(&pins(1, share, cores)).await?;
            f.push(("chunk_secs", "0".into()));
            let (whole, _) = fleet.time(&bytes, &f).await?;
            f.pop();
            f.push(("chunk_secs", chunk_secs.to_string()));
            let mut cells = Vec::new();
            for &n in counts {
                fleet.nodes(&pins(n, share, cores)).await?;
                let (secs, chunks) = fleet.time(&bytes, &f).await?;
                let x = whole / secs;
                cells.push(format!(
                    "{:>22}",
                    format!("{x:.2} ({:.0} %, {chunks} ch)", x / n as f64 * 100.0)
                ));
            }
            println!("{codec:<6} {whole:>9.1} {}", cells.join(""));
        }
        fleet.stop_nodes();
        println!(
            "(× = whole on one node / chunked on N nodes, submission to completion through the \
             API, side by side in this run; linear = × / N; ch = chunks the title was cut into)"
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::pins;

    #[test]
    fn each_node_gets_its_own_cores_until_they_run_out() {
        assert_eq!(pins(1, 2, 16), ["0,1"]);
        assert_eq!(pins(4, 2, 16), ["0,1", "2,3", "4,5", "6,7"]);
        assert_eq!(pins(2, 1, 2), ["0", "1"]);
        assert_eq!(pins(4, 1, 2), ["0", "1", "0", "1"]);
        assert_eq!(pins(3, 2, 5), ["0,1", "2,3", "4,0"]);
    }
}
