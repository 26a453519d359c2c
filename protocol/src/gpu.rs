//! The GPUs of a node's host as the fleet sees them: what each one is (probed once at start),
//! how it is doing (in every heartbeat), and the operator commands that reach a node through
//! the registry (take a GPU out, put it back).

use serde::{Deserialize, Serialize};

/// How many of each media engine a GPU has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuEngines {
    /// NVENC (video encode) engines.
    pub nvenc: u32,
    /// NVDEC (video decode) engines.
    pub nvdec: u32,
    /// NVJPG (JPEG decode) engines.
    pub nvjpg: u32,
    /// Where the counts come from: `nvml` (the GPU's full MIG profile), `model` (the model's
    /// published counts, checked against what opened on the device) or `opened` (at least one
    /// of each engine a codec opened on; the model is not in the table).
    pub source: String,
}

/// One GPU of the host, as probed at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuInfo {
    /// The CUDA device index (NVML's index, in PCI bus order), as `KILN_GPUS` names it.
    pub index: u32,
    /// The model (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// NVML's UUID (`GPU-…`), stable across reboots.
    #[serde(default)]
    pub uuid: String,
    /// PCI bus id (`00000000:19:00.0`).
    #[serde(default)]
    pub pci_bus_id: String,
    /// Memory on the card, MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// Media engine counts.
    #[serde(default)]
    pub engines: GpuEngines,
    /// NVENC encoders that opened on this device (`h264_nvenc`, …).
    #[serde(default)]
    pub encoders: Vec<String>,
    /// NVDEC decoders that opened on this device (`h264_cuvid`, …).
    #[serde(default)]
    pub decoders: Vec<String>,
    /// Whether FFmpeg's CUDA hwaccel (NVDEC decode, `scale_cuda`) opened on it.
    #[serde(default)]
    pub cuda: bool,
    /// The wgpu adapter on the same device, when one matched (images resize on it).
    #[serde(default)]
    pub adapter: Option<String>,
}

/// Whether a node places work on a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GpuHealth {
    /// Takes work.
    #[default]
    Healthy,
    /// A device fault: no new work until the back-off ends, then it is tried again.
    BackingOff,
    /// Repeated faults, or an operator: no work until an operator enables it again.
    Disabled,
}

/// One GPU's state, in every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuState {
    /// The CUDA device index.
    pub index: u32,
    pub health: GpuHealth,
    /// Why it is not healthy (the last fault, or the operator's action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a back-off ends (ms since epoch, node clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    /// Device faults counted towards taking it out.
    #[serde(default)]
    pub faults: u32,
    /// Kiln jobs placed on it now.
    #[serde(default)]
    pub jobs: u32,
    /// NVENC sessions Kiln holds on it now, and how many it may hold.
    #[serde(default)]
    pub nvenc_sessions: u32,
    #[serde(default)]
    pub nvenc_limit: u32,
    /// Utilisation from NVML, percent, by engine (`gpu`, `memory`, `encoder`, `decoder`,
    /// `jpeg`); empty where NVML gave none.
    #[serde(default)]
    pub utilisation: Vec<EngineLoad>,
    /// Memory in use on the card (by every process), MiB.
    #[serde(default)]
    pub memory_used_mib: u64,
}

/// One engine's utilisation, percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EngineLoad {
    pub engine: String,
    pub percent: u32,
}

/// What an operator asks of a node, delivered through the registry at its next report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum NodeCommand {
    /// Put a GPU back into service (clears its faults).
    EnableGpu { gpu: u32 },
    /// Take a GPU out of service until enabled again.
    DisableGpu { gpu: u32 },
    /// Take no new jobs and finish the running ones (as SIGTERM does), but stay up and
    /// registered, until resumed.
    Drain,
    /// Take jobs again after a drain.
    Resume,
}
