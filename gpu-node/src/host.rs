//! Every GPU of the node's host: found once through NVML ([`probe`]), selected by `KILN_GPUS`,
//! each with the codecs that open on it and its wgpu adapter; then, while the node runs, each
//! GPU's jobs, NVENC sessions, NVML load and health ([`HostGpus`]), which is where a job is
//! placed ([`HostGpus::place`]) and where device faults and operators' commands land.
//!
//! The pure parts are their own modules and tested as tables: [`placement`] (which GPU takes
//! a job), [`health`] (back-off and taking a GPU out), [`engines`] (engine counts).

use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_protocol::{EngineLoad, GpuHealth, GpuInfo, GpuState, NodeCommand};

pub mod engines;
pub mod health;
mod nvml;
pub mod placement;
pub mod scope;

pub use health::{Change, Health, HealthPolicy};
pub use placement::{Engine, GpuLoad};
pub use scope::{DeviceFaults, Placement};

use crate::metrics::NodeMetrics;

/// Make CUDA number the GPUs as NVML does, in PCI bus order (CUDA's own default puts the
/// fastest first), so that one index means one GPU to NVML, FFmpeg and `KILN_GPUS`; an
/// operator's own `CUDA_DEVICE_ORDER` is kept. Call first thing in `main`, before any thread.
pub fn use_pci_bus_order() {
    if std::env::var_os("CUDA_DEVICE_ORDER").is_none() {
        std::env::set_var("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    }
}

/// `KILN_GPUS`: which of the host's GPUs the node drives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU (the default).
    #[default]
    All,
    /// None: the node runs on its CPU.
    None,
    /// These, by CUDA index (`0`) or NVML UUID (`GPU-8f6e…`).
    Only(Vec<String>),
}

impl FromStr for GpuSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            list => list
                .split(',')
                .map(|t| {
                    let t = t.trim();
                    if t.parse::<u32>().is_ok() || t.starts_with("GPU-") || t.starts_with("MIG-") {
                        Ok(t.to_string())
                    } else {
                        Err(format!(
                            "{t:?} is not a GPU: give all, none, or indices and UUIDs separated by commas (0,2 or GPU-…)"
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Only),
        }
    }
}

impl GpuSelection {
    /// Whether GPU `index` (with `uuid`) is selected.
    pub fn selects(&self, index: u32, uuid: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Only(list) => list.iter().any(|t| names(t, index, uuid)),
        }
    }
}

/// Whether one `KILN_GPUS` entry (an index or a UUID) names GPU `index` with `uuid`.
fn names(entry: &str, index: u32, uuid: &str) -> bool {
    entry.parse::<u32>().ok() == Some(index) || (!uuid.is_empty() && entry == uuid)
}

/// Whether a GPU decodes with NVDEC: its CUDA device and a cuvid decoder opened.
fn decodes(g: &GpuInfo) -> bool {
    g.cuda && !g.decoders.is_empty()
}

/// Whether an NVENC encoder opened on a GPU.
fn encodes(g: &GpuInfo) -> bool {
    !g.encoders.is_empty()
}

/// What the probe found: the GPUs the node drives, or why it drives none.
#[derive(Debug, Clone, Default)]
pub struct HostProbe {
    pub gpus: Vec<GpuInfo>,
    /// Why no GPU is driven (no driver, none present, none selected).
    pub none_because: Option<String>,
}

/// List the host's NVIDIA GPUs, keep those `selection` names, and probe each: the CUDA hwaccel,
/// the NVDEC decoders and NVENC encoders that open on it, its engines, its wgpu adapter. Says
/// what it found in one log line (a node without a GPU says so once, at info).
pub fn probe(selection: &GpuSelection) -> HostProbe {
    let found = match selection {
        GpuSelection::None => Err("KILN_GPUS=none".to_string()),
        _ => nvml::devices(),
    };
    let devices = match found {
        Ok(d) if d.is_empty() => Err("the NVIDIA driver lists no GPU".to_string()),
        other => other,
    };
    let probe = match devices {
        // No NVML (a container without the driver's `utility` capability) but FFmpeg opened
        // CUDA: drive that device as FFmpeg sees it, without NVML's figures.
        Err(why)
            if *selection != GpuSelection::None
                && selection.selects(0, "")
                && crate::media::capabilities().cuda.available =>
        {
            tracing::warn!(reason = %why, "NVML unavailable: driving CUDA device 0 as FFmpeg opened it, without load figures");
            let name = crate::node::gpu_model().unwrap_or_else(|| "NVIDIA GPU".into());
            let device = nvml::Device {
                index: 0,
                name,
                uuid: String::new(),
                pci_bus_id: String::new(),
                memory_mib: 0,
                engines: None,
            };
            HostProbe {
                gpus: vec![describe(&device, &[])],
                none_because: None,
            }
        }
        Err(why) => HostProbe {
            gpus: vec![],
            none_because: Some(why),
        },
        Ok(devices) => {
            let adapters = crate::gpu::device::hardware_adapters();
            let gpus: Vec<GpuInfo> = devices
                .iter()
                .filter(|d| selection.selects(d.index, &d.uuid))
                .map(|d| describe(d, &adapters))
                .collect();
            if let GpuSelection::Only(list) = selection {
                for t in list {
                    if !devices.iter().any(|d| names(t, d.index, &d.uuid)) {
                        tracing::warn!(gpu = %t, "KILN_GPUS names a GPU this host does not have");
                    }
                }
            }
            HostProbe {
                none_because: gpus.is_empty().then(|| {
                    format!(
                        "KILN_GPUS selects none of the host's {} GPU(s)",
                        devices.len()
                    )
                }),
                gpus,
            }
        }
    };
    match &probe.none_because {
        Some(why) => tracing::info!(reason = %why, "no GPU: video and images run on the CPU"),
        None => {
            let list: Vec<String> = probe
                .gpus
                .iter()
                .map(|g| {
                    format!(
                        "{} {} (NVDEC {}, NVENC {}{})",
                        g.index,
                        g.name,
                        g.engines.nvdec,
                        g.engines.nvenc,
                        if g.cuda { "" } else { ", CUDA did not open" }
                    )
                })
                .collect();
            tracing::info!(gpus = %list.join("; "), "GPUs driven by this node");
        }
    }
    probe
}

/// One device with the codecs that open on it.
fn describe(d: &nvml::Device, adapters: &[(String, String)]) -> GpuInfo {
    let codecs = crate::media::capabilities::probe_on_gpu(d.index);
    let adapter = adapters
        .iter()
        .find(|(bus, _)| same_pci_bus(bus, &d.pci_bus_id))
        .map(|(_, name)| name.clone());
    GpuInfo {
        index: d.index,
        name: d.name.clone(),
        uuid: d.uuid.clone(),
        pci_bus_id: d.pci_bus_id.clone(),
        memory_mib: d.memory_mib,
        engines: engines::counts(
            d.engines,
            &d.name,
            !codecs.encoders.is_empty(),
            !codecs.decoders.is_empty(),
        ),
        cuda: codecs.cuda.is_ok(),
        encoders: codecs.encoders,
        decoders: codecs.decoders,
        adapter,
    }
}

/// Whether two PCI bus ids name one device: NVML writes `00000000:19:00.0`, Vulkan
/// `0000:19:00.0` (domain widths differ; the numbers are hex).
pub fn same_pci_bus(a: &str, b: &str) -> bool {
    fn parts(s: &str) -> Option<[u32; 4]> {
        let (domain, rest) = s.trim().split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let hex = |p: &str| u32::from_str_radix(p, 16).ok();
        Some([hex(domain)?, hex(bus)?, hex(dev)?, hex(func)?])
    }
    matches!((parts(a), parts(b)), (Some(x), Some(y)) if x == y)
}

/// One GPU while the node runs.
#[derive(Debug, Default)]
struct Live {
    health: Health,
    jobs: u32,
    sessions: u32,
    sample: nvml::Sample,
}

/// The node's GPUs while it runs: their jobs, NVENC sessions, load and health.
pub struct HostGpus {
    gpus: Vec<GpuInfo>,
    /// NVENC sessions per GPU (`KILN_NVENC_SESSIONS`).
    nvenc_limit: u32,
    /// Jobs per GPU (`KILN_SLOTS_PER_GPU`; 0: no limit).
    job_limit: u32,
    policy: HealthPolicy,
    live: Mutex<Vec<Live>>,
    metrics: Option<NodeMetrics>,
}

impl std::fmt::Debug for HostGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostGpus")
            .field("gpus", &self.gpus)
            .finish()
    }
}

impl HostGpus {
    /// `gpus` as probed, each allowed `nvenc_limit` NVENC sessions.
    pub fn new(gpus: Vec<GpuInfo>, nvenc_limit: u32, policy: HealthPolicy) -> Arc<Self> {
        let live = gpus.iter().map(|_| Live::default()).collect();
        Arc::new(Self {
            gpus,
            nvenc_limit,
            job_limit: 0,
            policy,
            live: Mutex::new(live),
            metrics: None,
        })
    }

    /// The same GPUs, each taking at most `jobs` jobs at once.
    pub fn with_job_limit(self: Arc<Self>, jobs: u32) -> Arc<Self> {
        let this = Arc::into_inner(self).expect("with_job_limit before the GPUs are shared");
        Arc::new(Self {
            job_limit: jobs,
            ..this
        })
    }

    /// A host without GPUs.
    pub fn none() -> Arc<Self> {
        Self::new(vec![], 0, HealthPolicy::default())
    }

    /// The same GPUs, exporting per-GPU metrics to `metrics`.
    pub fn with_metrics(self: Arc<Self>, metrics: NodeMetrics) -> Arc<Self> {
        let this = Arc::into_inner(self).expect("with_metrics before the GPUs are shared");
        let this = Arc::new(Self {
            metrics: Some(metrics),
            ..this
        });
        this.export(&this.lock());
        this
    }

    pub fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn position(&self, gpu: u32) -> Option<usize> {
        self.gpus.iter().position(|g| g.index == gpu)
    }

    /// Whether some GPU encodes with NVENC at all.
    pub fn has_nvenc(&self) -> bool {
        self.nvenc_limit > 0 && self.gpus.iter().any(encodes)
    }

    /// Whether some GPU decodes with NVDEC.
    pub fn has_decode(&self) -> bool {
        self.gpus.iter().any(decodes)
    }

    /// Whether some GPU has a wgpu adapter for the image shader.
    pub fn has_image(&self) -> bool {
        self.gpus.iter().any(|g| g.adapter.is_some())
    }

    /// NVENC sessions over every GPU that has NVENC.
    pub fn nvenc_total(&self) -> u32 {
        self.gpus.iter().filter(|g| encodes(g)).count() as u32 * self.nvenc_limit
    }

    fn loads(&self, live: &[Live]) -> Vec<GpuLoad> {
        self.gpus
            .iter()
            .zip(live)
            .map(|(g, l)| GpuLoad {
                index: g.index,
                usable: l.health.usable(),
                decode: decodes(g),
                nvenc_engines: if encodes(g) {
                    g.engines.nvenc.max(1)
                } else {
                    0
                },
                nvdec_engines: g.engines.nvdec.max(1),
                image: g.adapter.is_some(),
                nvenc_sessions: l.sessions,
                nvenc_limit: self.nvenc_limit,
                jobs: l.jobs,
                max_jobs: self.job_limit,
                decoder_util: l.sample.decoder.unwrap_or(0),
                encoder_util: l.sample.encoder.unwrap_or(0),
                gpu_util: l.sample.gpu.unwrap_or(0),
                memory_free_mib: l.sample.memory_free_mib,
            })
            .collect()
    }

    /// Whether a healthy GPU has an NVENC session free.
    pub fn nvenc_free(&self) -> bool {
        let live = self.lock();
        placement::pick(&self.loads(&live), &[Engine::Encode], &[]).is_some()
    }

    /// Place a job that needs `needs` on the least loaded GPU that has them, skipping `avoid`;
    /// its job (and NVENC session) is counted until the returned guard drops.
    pub fn place(self: &Arc<Self>, needs: &[Engine], avoid: &[u32]) -> Option<Placed> {
        if needs.is_empty() {
            return None;
        }
        let mut live = self.lock();
        let index = placement::pick(&self.loads(&live), needs, avoid)?;
        let at = self.position(index)?;
        let nvenc = needs.contains(&Engine::Encode);
        live[at].jobs += 1;
        live[at].sessions += nvenc as u32;
        self.export(&live);
        Some(Placed {
            host: self.clone(),
            index,
            nvenc,
        })
    }

    fn release(&self, index: u32, nvenc: bool) {
        let mut live = self.lock();
        if let Some(at) = self.position(index) {
            live[at].jobs = live[at].jobs.saturating_sub(1);
            if nvenc {
                live[at].sessions = live[at].sessions.saturating_sub(1);
            }
        }
        self.export(&live);
    }

    /// Place a job's work: every engine it needs on one GPU if one can take them all, else its
    /// decode alone (the encode on the CPU), else its encode alone; the job's fault sink.
    pub fn place_job(self: &Arc<Self>, needs: &[Engine]) -> Arc<JobGpu> {
        let mut placed = self.place(needs, &[]);
        for fewer in [Engine::Decode, Engine::Encode] {
            if placed.is_none() && needs.len() > 1 && needs.contains(&fewer) {
                placed = self.place(&[fewer], &[]);
            }
        }
        let needs = placed.as_ref().map_or_else(Vec::new, |p| {
            needs
                .iter()
                .copied()
                .filter(|e| *e != Engine::Encode || p.nvenc)
                .collect()
        });
        Arc::new(JobGpu {
            host: self.clone(),
            needs,
            placed: Mutex::new(placed),
            tried: Mutex::new(vec![]),
        })
    }

    /// A device fault on `gpu`: back off, or take it out after repeated faults.
    pub fn fault(&self, gpu: u32, reason: &str) {
        let Some(at) = self.position(gpu) else {
            return;
        };
        let mut live = self.lock();
        let change = live[at]
            .health
            .fault(kiln_protocol::now_ms(), reason, &self.policy);
        self.announce(gpu, &change, reason);
        self.export(&live);
    }

    /// An operator's command for this node; whether it named one of its GPUs.
    pub fn command(&self, command: &NodeCommand) -> bool {
        let (gpu, enable) = match command {
            NodeCommand::EnableGpu { gpu } => (*gpu, true),
            NodeCommand::DisableGpu { gpu } => (*gpu, false),
            // The worker's, not a GPU's.
            NodeCommand::Drain | NodeCommand::Resume => return false,
        };
        let Some(at) = self.position(gpu) else {
            tracing::warn!(
                gpu,
                ?command,
                "a command for a GPU this node does not drive"
            );
            return false;
        };
        let mut live = self.lock();
        let change = if enable {
            live[at].health.enable()
        } else {
            live[at].health.disable("disabled by an operator")
        };
        self.announce(gpu, &change, "operator");
        self.export(&live);
        true
    }

    /// Time passes: back-offs that ended put their GPUs back; NVML's load is read again.
    pub fn refresh(&self) {
        let samples: Vec<nvml::Sample> = self.gpus.iter().map(|g| nvml::sample(g.index)).collect();
        let now = kiln_protocol::now_ms();
        let mut live = self.lock();
        for ((g, l), s) in self.gpus.iter().zip(live.iter_mut()).zip(samples) {
            let change = l.health.tick(now);
            self.announce(g.index, &change, "back-off ended");
            l.sample = s;
        }
        self.export(&live);
    }

    /// Log a health change once.
    fn announce(&self, gpu: u32, change: &Change, reason: &str) {
        match change {
            Change::None => {}
            Change::BackedOff { until_ms } => tracing::warn!(
                gpu,
                %reason,
                back_off_s = (until_ms - kiln_protocol::now_ms()) / 1000,
                "GPU fault: no new work on this GPU until the back-off ends"
            ),
            Change::Disabled => tracing::error!(
                gpu,
                %reason,
                "GPU taken out of service until an operator enables it (POST /api/v1/nodes/{{node}}/gpus/{{gpu}}/enable)"
            ),
            Change::Recovered => tracing::info!(gpu, "GPU back-off ended: taking work again"),
            Change::Enabled => tracing::info!(gpu, "GPU enabled by an operator"),
        }
    }

    /// Each GPU's state for the heartbeat.
    pub fn states(&self) -> Vec<GpuState> {
        let live = self.lock();
        self.gpus
            .iter()
            .zip(live.iter())
            .map(|(g, l)| GpuState {
                index: g.index,
                health: l.health.state(),
                reason: l.health.reason().map(str::to_string),
                until_ms: l.health.until_ms(),
                faults: l.health.faults(),
                jobs: l.jobs,
                nvenc_sessions: l.sessions,
                nvenc_limit: if encodes(g) { self.nvenc_limit } else { 0 },
                utilisation: utilisation(&l.sample)
                    .into_iter()
                    .map(|(engine, percent)| EngineLoad {
                        engine: engine.to_string(),
                        percent,
                    })
                    .collect(),
                memory_used_mib: l.sample.memory_used_mib.unwrap_or(0),
            })
            .collect()
    }

    fn export(&self, live: &[Live]) {
        let Some(m) = &self.metrics else { return };
        for (g, l) in self.gpus.iter().zip(live) {
            let gpu = g.index.to_string();
            m.gpu_healthy
                .with_label_values(&[gpu.as_str()])
                .set((l.health.state() == GpuHealth::Healthy) as i64);
            m.gpu_jobs
                .with_label_values(&[gpu.as_str()])
                .set(l.jobs as i64);
            for (engine, percent) in utilisation(&l.sample) {
                m.gpu_utilisation
                    .with_label_values(&[gpu.as_str(), engine])
                    .set(percent as i64);
            }
        }
    }
}

/// NVML's figures by engine label.
fn utilisation(s: &nvml::Sample) -> Vec<(&'static str, u32)> {
    [
        ("gpu", s.gpu),
        ("memory", s.memory),
        ("encoder", s.encoder),
        ("decoder", s.decoder),
    ]
    .into_iter()
    .filter_map(|(e, v)| v.map(|v| (e, v)))
    .collect()
}

/// A job's place on one GPU, counted until dropped.
#[derive(Debug)]
pub struct Placed {
    host: Arc<HostGpus>,
    index: u32,
    nvenc: bool,
}

impl Placed {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether an NVENC session on the GPU is the job's.
    pub fn nvenc(&self) -> bool {
        self.nvenc
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.host.release(self.index, self.nvenc);
    }
}

/// One job's GPU: where it was placed, and where it moves when that GPU faults.
pub struct JobGpu {
    host: Arc<HostGpus>,
    needs: Vec<Engine>,
    placed: Mutex<Option<Placed>>,
    tried: Mutex<Vec<u32>>,
}

impl JobGpu {
    /// The placement the job's media code runs with.
    pub fn placement(self: &Arc<Self>) -> Placement {
        let placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        Placement {
            gpu: placed.as_ref().map(Placed::index),
            nvenc: placed.as_ref().is_some_and(Placed::nvenc),
            // None where NVML gave no bus (a GPU driven without it): no adapter to look for.
            pci_bus_id: placed.as_ref().and_then(|p| {
                let bus = &self.host.gpus[self.host.position(p.index)?].pci_bus_id;
                (!bus.is_empty()).then(|| bus.clone())
            }),
            faults: Some(self.clone() as Arc<dyn DeviceFaults>),
        }
    }

    /// The GPU the job is on now.
    pub fn gpu(&self) -> Option<u32> {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Placed::index)
    }
}

impl DeviceFaults for JobGpu {
    fn fault(&self, gpu: u32, reason: &str) -> Option<u32> {
        self.host.fault(gpu, reason);
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        tried.push(gpu);
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        // Release the faulted GPU before asking for another.
        *placed = None;
        *placed = self.host.place(&self.needs, &tried);
        placed.as_ref().map(Placed::index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, nvenc: bool) -> GpuInfo {
        GpuInfo {
            index,
            name: "test".into(),
            pci_bus_id: format!("00000000:{:02x}:00.0", index + 0x10),
            cuda: true,
            decoders: vec!["h264_cuvid".into()],
            encoders: if nvenc {
                vec!["h264_nvenc".into()]
            } else {
                vec![]
            },
            engines: kiln_protocol::GpuEngines {
                nvenc: nvenc as u32,
                nvdec: 2,
                nvjpg: 0,
                source: "model".into(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn metrics_per_gpu_follow_health_and_jobs() {
        let registry = prometheus::Registry::new();
        let metrics = NodeMetrics::register(&registry);
        let host = HostGpus::new(
            vec![gpu(0, false), gpu(1, false)],
            3,
            HealthPolicy::default(),
        )
        .with_metrics(metrics);
        let text = || crate::metrics::render(&registry);
        let has = |line: &str| {
            let t = text();
            assert!(t.contains(line), "{line} not in\n{t}");
        };
        has("kiln_node_gpu_healthy{gpu=\"1\"} 1");
        let placed = host.place(&[Engine::Decode], &[]).unwrap();
        has("kiln_node_gpu_jobs{gpu=\"0\"} 1");
        host.fault(1, "CUDA_ERROR_LAUNCH_FAILED");
        has("kiln_node_gpu_healthy{gpu=\"1\"} 0");
        drop(placed);
        has("kiln_node_gpu_jobs{gpu=\"0\"} 0");
        // Without NVML (this machine) no utilisation is made up.
        host.refresh();
        let t = text();
        assert!(
            nvml::devices().is_ok() || !t.contains("kiln_node_gpu_utilisation{"),
            "{t}"
        );
    }

    #[test]
    fn selection_from_kiln_gpus() {
        let cases = [
            ("", Ok(GpuSelection::All)),
            ("all", Ok(GpuSelection::All)),
            ("none", Ok(GpuSelection::None)),
            ("0, 2", Ok(GpuSelection::Only(vec!["0".into(), "2".into()]))),
            ("GPU-8f6e", Ok(GpuSelection::Only(vec!["GPU-8f6e".into()]))),
        ];
        for (v, want) in cases {
            assert_eq!(v.parse::<GpuSelection>(), want, "{v}");
        }
        assert!("gpu0".parse::<GpuSelection>().is_err());
        let only: GpuSelection = "1,GPU-abc".parse().unwrap();
        // (index, uuid, selected)
        for (i, uuid, want) in [(0, "GPU-x", false), (1, "", true), (3, "GPU-abc", true)] {
            assert_eq!(only.selects(i, uuid), want, "{i} {uuid}");
        }
        assert!(!GpuSelection::None.selects(0, ""));
    }

    #[test]
    fn pci_bus_ids_match_across_writers() {
        // (NVML's, Vulkan's, same)
        let cases = [
            ("00000000:19:00.0", "0000:19:00.0", true),
            ("00000000:1A:00.0", "0000:1a:00.0", true),
            ("00000000:19:00.0", "0000:1a:00.0", false),
            ("00000001:19:00.0", "0000:19:00.0", false),
            ("", "", false),
            ("garbage", "garbage", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(same_pci_bus(a, b), want, "{a} {b}");
        }
    }

    #[test]
    fn sessions_are_counted_per_gpu_and_given_back() {
        let host = HostGpus::new(vec![gpu(0, true), gpu(1, true)], 2, HealthPolicy::default());
        assert_eq!(host.nvenc_total(), 4);
        let mut held = vec![];
        // Two sessions on each GPU, spread by load: 0, 1, 0, 1.
        for want in [0, 1, 0, 1] {
            let p = host.place(&[Engine::Encode], &[]).unwrap();
            assert_eq!(p.index(), want);
            held.push(p);
        }
        assert!(!host.nvenc_free());
        assert!(host.place(&[Engine::Encode], &[]).is_none());
        // Decoding still places while every session is taken.
        assert!(host.place(&[Engine::Decode], &[]).is_some());
        let states = host.states();
        assert_eq!(
            states.iter().map(|s| s.nvenc_sessions).collect::<Vec<_>>(),
            [2, 2]
        );
        held.remove(1);
        assert!(host.nvenc_free());
        assert_eq!(host.place(&[Engine::Encode], &[]).unwrap().index(), 1);
        drop(held);
        // A job limit per GPU counts every job, whatever its engines.
        let host = HostGpus::new(vec![gpu(0, true)], 3, HealthPolicy::default()).with_job_limit(2);
        let two = [Engine::Decode, Engine::Decode].map(|e| host.place(&[e], &[]).unwrap());
        assert!(host.place(&[Engine::Encode], &[]).is_none());
        drop(two);
        assert!(host.place(&[Engine::Encode], &[]).is_some());
        assert!(host
            .states()
            .iter()
            .all(|s| s.nvenc_sessions == 0 && s.jobs == 0));
    }

    #[test]
    fn a_job_falls_back_to_decode_only_when_no_session_is_free() {
        let host = HostGpus::new(vec![gpu(0, true)], 1, HealthPolicy::default());
        let first = host.place_job(&[Engine::Decode, Engine::Encode]);
        let p1 = first.placement();
        assert_eq!((p1.gpu, p1.nvenc), (Some(0), true));
        let second = host.place_job(&[Engine::Decode, Engine::Encode]);
        let p2 = second.placement();
        assert_eq!((p2.gpu, p2.nvenc), (Some(0), false), "decode only");
        assert_eq!(host.states()[0].jobs, 2);
        // Held until the job and every copy of its placement (its threads') are gone.
        drop((first, second, p1));
        assert_eq!(host.states()[0].jobs, 1);
        drop(p2);
        assert_eq!(host.states()[0].jobs, 0);
        // A CPU job is placed nowhere.
        assert_eq!(host.place_job(&[]).placement().gpu, None);
    }

    #[test]
    fn a_fault_moves_the_job_and_backs_the_gpu_off() {
        let host = HostGpus::new(
            vec![gpu(0, false), gpu(1, false)],
            3,
            HealthPolicy::default(),
        );
        let job = host.place_job(&[Engine::Decode]);
        let first = job.placement();
        assert_eq!(first.gpu, Some(0));
        // The device failed: the job moves to GPU 1, GPU 0 backs off.
        assert_eq!(first.fault(0, "CUDA_ERROR_ILLEGAL_ADDRESS"), Some(1));
        assert_eq!(job.gpu(), Some(1));
        let s = host.states();
        assert_eq!(s[0].health, GpuHealth::BackingOff);
        assert_eq!((s[0].jobs, s[1].jobs), (0, 1));
        assert_eq!(s[0].reason.as_deref(), Some("CUDA_ERROR_ILLEGAL_ADDRESS"));
        // GPU 1 fails too: nowhere left, the job goes to the CPU.
        assert_eq!(job.placement().fault(1, "no CUDA device"), None);
        assert_eq!(job.gpu(), None);
        assert!(host.place(&[Engine::Decode], &[]).is_none());
        // An operator puts GPU 0 back; a disabled one takes nothing.
        assert!(host.command(&NodeCommand::EnableGpu { gpu: 0 }));
        assert!(host.command(&NodeCommand::DisableGpu { gpu: 1 }));
        assert!(!host.command(&NodeCommand::EnableGpu { gpu: 7 }));
        let s = host.states();
        assert_eq!(
            (s[0].health, s[0].faults, s[1].health),
            (GpuHealth::Healthy, 0, GpuHealth::Disabled)
        );
        assert_eq!(host.place(&[Engine::Decode], &[]).unwrap().index(), 0);
    }
}
