//! Image resizing: the wgpu compute path (shaders/resize.wgsl), the fast CPU path
//! (fast_image_resize) and the f64 reference both are tested against.

pub mod cpu;
pub mod device;
pub mod filter;
pub mod reference;
pub mod srgb;

pub use device::{AdapterSummary, GpuError, GpuResizer, PoolStats};
pub use filter::Filter;

use std::sync::OnceLock;

/// Which path resized an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeBackend {
    Wgpu,
    Cpu,
}

impl ResizeBackend {
    /// The name used in headers, metrics and capabilities.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// The node's resize choice, made once: which path, on which adapter, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResizerChoice {
    pub backend: ResizeBackend,
    pub adapter: Option<AdapterSummary>,
    pub reason: String,
}

/// `KILN_IMAGE_RESIZER` = `auto` (default), `wgpu` or `cpu`.
fn requested() -> String {
    std::env::var("KILN_IMAGE_RESIZER")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The best adapter's description, found without creating a device (cheap: a node that will
/// resize on the CPU pays only for the enumeration).
fn best_adapter() -> Option<AdapterSummary> {
    pollster::block_on(device::best_adapter()).map(|a| device::summarise(&a.get_info()))
}

/// The node's one wgpu device for resizing, created on first use when the shader path was
/// chosen; `None` otherwise, or (with the reason logged once) when it could not be created.
pub fn shared_resizer() -> Option<&'static GpuResizer> {
    static RESIZER: OnceLock<Option<GpuResizer>> = OnceLock::new();
    RESIZER
        .get_or_init(|| {
            if choice().backend != ResizeBackend::Wgpu {
                return None;
            }
            match GpuResizer::new() {
                Ok(r) => {
                    tracing::info!(adapter = ?r.adapter(), "wgpu device ready");
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wgpu device failed; images resize on the CPU");
                    None
                }
            }
        })
        .as_ref()
}

/// The resizer on the adapter of the GPU on PCI bus `bus`, created on first use, one per GPU
/// for the process's life; `None` (logged once per GPU) when it could not be created.
fn resizer_on(bus: &str) -> Option<&'static GpuResizer> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static ON: OnceLock<Mutex<HashMap<String, Option<&'static GpuResizer>>>> = OnceLock::new();
    let mut map = ON
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    *map.entry(bus.to_string())
        .or_insert_with(|| match GpuResizer::on_bus(bus) {
            Ok(r) => {
                tracing::info!(bus, adapter = ?r.adapter(), "wgpu device ready");
                // One per GPU of the host, kept for the process's life.
                Some(&*Box::leak(Box::new(r)))
            }
            Err(e) => {
                tracing::warn!(bus, error = %e, "wgpu device failed on this GPU; its images resize on the shared adapter");
                None
            }
        })
}

/// Decide once which path resizes images. A real GPU adapter takes the shader path; a CPU
/// Vulkan driver (lavapipe) runs the same shader slower than fast_image_resize runs on the same
/// cores (kiln-bench image), so `auto` resizes on the CPU there. `KILN_IMAGE_RESIZER=wgpu`
/// forces the shader on any adapter; `cpu` never touches wgpu.
pub fn choice() -> &'static ResizerChoice {
    static CHOICE: OnceLock<ResizerChoice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let wanted = requested();
        let adapter = if wanted == "cpu" {
            None
        } else {
            best_adapter()
        };
        let (backend, reason) = match (wanted.as_str(), &adapter) {
            ("cpu", _) => (ResizeBackend::Cpu, "KILN_IMAGE_RESIZER=cpu".to_string()),
            (_, None) => (ResizeBackend::Cpu, "no wgpu adapter found".to_string()),
            ("wgpu", Some(a)) => (
                ResizeBackend::Wgpu,
                format!("KILN_IMAGE_RESIZER=wgpu on {}", a.name),
            ),
            (_, Some(a)) if a.is_hardware() => {
                (ResizeBackend::Wgpu, format!("{} {}", a.device_type, a.name))
            }
            (_, Some(a)) => (
                ResizeBackend::Cpu,
                format!(
                    "adapter {} is a CPU driver; fast_image_resize measured faster on these cores",
                    a.name
                ),
            ),
        };
        tracing::info!(backend = backend.as_str(), %reason, "image resize path chosen");
        ResizerChoice {
            backend,
            adapter,
            reason,
        }
    })
}

/// Resize packed RGBA8 (sRGB, straight alpha) from `src_w`×`src_h` to `dst_w`×`dst_h` in
/// linear light, on the chosen path; a GPU failure falls back to the CPU with the reason
/// logged. `opaque` lets the CPU path skip alpha work.
pub fn resize_rgba8(
    src: &[u8],
    (src_w, src_h): (u32, u32),
    (dst_w, dst_h): (u32, u32),
    filter: Filter,
    opaque: bool,
) -> Result<(Vec<u8>, ResizeBackend), cpu::CpuResizeError> {
    if choice().backend == ResizeBackend::Wgpu {
        // `None` here means the device failed to start; that was logged once.
        // The GPU the node placed this job on, else the node's one adapter.
        let placed = crate::host::scope::current()
            .and_then(|p| p.pci_bus_id)
            .and_then(|bus| resizer_on(&bus));
        if let Some(gpu) = placed.or_else(shared_resizer) {
            match gpu.resize_rgba8(src, src_w, src_h, dst_w, dst_h, filter) {
                Ok(out) => return Ok((out, ResizeBackend::Wgpu)),
                Err(e) => tracing::warn!(error = %e, "wgpu resize failed; using the CPU path"),
            }
        }
    }
    let out = cpu::resize_rgba8(src, src_w, src_h, dst_w, dst_h, filter, opaque)?;
    Ok((out, ResizeBackend::Cpu))
}
