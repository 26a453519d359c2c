//! Image resizing: the wgpu compute path (shaders/resize.wgsl) and the CPU path it falls back to.

pub mod cpu;
pub mod device;

pub use device::{AdapterSummary, GpuError, GpuResizer};

use std::sync::OnceLock;

/// Which path resized an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeBackend {
    Wgpu,
    Cpu,
}

/// The node's one wgpu device, created on first use; `None` (with the reason logged once) when
/// no adapter is usable, so callers take the CPU path.
pub fn shared_resizer() -> Option<&'static GpuResizer> {
    static RESIZER: OnceLock<Option<GpuResizer>> = OnceLock::new();
    RESIZER
        .get_or_init(|| match GpuResizer::new() {
            Ok(r) => {
                tracing::info!(adapter = ?r.adapter(), "wgpu resizer ready");
                Some(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usable wgpu adapter; images resize on the CPU");
                None
            }
        })
        .as_ref()
}

/// Resize packed RGBA8 (sRGB, straight alpha) from `src_w`×`src_h` to `dst_w`×`dst_h` with
/// Lanczos3 in linear light, on the GPU when one is usable, else on the CPU.
pub fn resize_rgba8(
    src: &[u8],
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
) -> (Vec<u8>, ResizeBackend) {
    if let Some(gpu) = shared_resizer() {
        match gpu.resize_rgba8(src, src_w, src_h, dst_w, dst_h) {
            Ok(out) => return (out, ResizeBackend::Wgpu),
            Err(e) => tracing::warn!(error = %e, "wgpu resize failed; using the CPU path"),
        }
    }
    (
        cpu::resize_rgba8(src, src_w, src_h, dst_w, dst_h),
        ResizeBackend::Cpu,
    )
}
