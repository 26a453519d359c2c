//! NVML, the driver's management library, opened at run time (`nvml-wrapper` dlopens
//! `libnvidia-ml.so.1`): a host without the NVIDIA driver gets the reason, not a failed start.

use std::sync::OnceLock;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

/// The full GPU-instance profile (`NVML_GPU_INSTANCE_PROFILE_7_SLICE`): on a MIG-capable card
/// its engine counts are the whole card's.
const FULL_PROFILE: u32 = 4;

/// One device as NVML lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub pci_bus_id: String,
    pub memory_mib: u64,
    /// (NVENC, NVDEC, NVJPG) from the full MIG profile, where the card has one.
    pub engines: Option<(u32, u32, u32)>,
}

/// One device's load now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub gpu: Option<u32>,
    pub memory: Option<u32>,
    pub encoder: Option<u32>,
    pub decoder: Option<u32>,
    pub memory_used_mib: Option<u64>,
    pub memory_free_mib: Option<u64>,
}

/// The process's NVML, or why there is none; opened once.
fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| {
        Nvml::init().map_err(|e| match e {
            NvmlError::LibloadingError(_) => {
                "no NVIDIA driver on this host (libnvidia-ml.so.1 not found)".to_string()
            }
            NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_string(),
            other => format!("NVML unavailable: {other}"),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Every NVIDIA GPU of the host, or why none can be listed.
pub fn devices() -> Result<Vec<Device>, String> {
    let nvml = nvml()?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    let mut out = Vec::new();
    for index in 0..count {
        let d = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(gpu = index, error = %e, "NVML cannot open this GPU; skipped");
                continue;
            }
        };
        let engines = d
            .profile_info(FULL_PROFILE)
            .ok()
            .map(|p| (p.encoder_count, p.decoder_count, p.jpeg_count));
        out.push(Device {
            index,
            name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
            uuid: d.uuid().unwrap_or_default(),
            pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
            memory_mib: d.memory_info().map(|m| m.total >> 20).unwrap_or(0),
            engines,
        });
    }
    Ok(out)
}

/// Device `index`'s load now (fields NVML did not give are `None`).
pub fn sample(index: u32) -> Sample {
    let Ok(nvml) = nvml() else {
        return Sample::default();
    };
    let Ok(d) = nvml.device_by_index(index) else {
        return Sample::default();
    };
    let rates = d.utilization_rates().ok();
    let memory = d.memory_info().ok();
    Sample {
        gpu: rates.as_ref().map(|r| r.gpu),
        memory: rates.as_ref().map(|r| r.memory),
        encoder: d.encoder_utilization().ok().map(|u| u.utilization),
        decoder: d.decoder_utilization().ok().map(|u| u.utilization),
        memory_used_mib: memory.as_ref().map(|m| m.used >> 20),
        memory_free_mib: memory.as_ref().map(|m| m.free >> 20),
    }
}
