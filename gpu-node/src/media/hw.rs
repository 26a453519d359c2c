//! NVDEC through FFmpeg's `cuda` hwaccel: one CUDA device per process, created once, and the
//! decoder hook that asks for CUDA frames.

use std::sync::OnceLock;

use rsmpeg::ffi;

use super::av_error_text;

/// A reference to FFmpeg's CUDA device context.
struct Device(*mut ffi::AVBufferRef);

// SAFETY: an AVHWDeviceContext is immutable once created and FFmpeg takes new references to it
// from any thread (av_buffer_ref is atomic).
unsafe impl Send for Device {}
// SAFETY: as for Send: nothing mutates the device context after creation.
unsafe impl Sync for Device {}

/// The process's CUDA device for FFmpeg, or why there is none (FFmpeg's words).
pub(crate) fn cuda_device() -> Result<*mut ffi::AVBufferRef, String> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    let d = DEVICE.get_or_init(|| {
        super::init_ffmpeg_logging();
        let mut dev: *mut ffi::AVBufferRef = std::ptr::null_mut();
        // SAFETY: plain FFmpeg call with an out-pointer; on failure nothing is allocated.
        let rc = unsafe {
            ffi::av_hwdevice_ctx_create(
                &mut dev,
                ffi::AVHWDeviceType_AV_HWDEVICE_TYPE_CUDA,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
            )
        };
        if rc < 0 || dev.is_null() {
            Err(format!("no CUDA device: {}", av_error_text(rc)))
        } else {
            Ok(Device(dev))
        }
    });
    d.as_ref().map(|d| d.0).map_err(Clone::clone)
}

/// Whether FFmpeg's decoder for `codec` can hand out CUDA frames.
pub(crate) fn decoder_supports_cuda(codec: *const ffi::AVCodec) -> bool {
    let mut i = 0;
    loop {
        // SAFETY: avcodec_get_hw_config returns NULL past the last entry.
        let cfg = unsafe { ffi::avcodec_get_hw_config(codec, i) };
        if cfg.is_null() {
            return false;
        }
        // SAFETY: `cfg` is non-NULL here and points at a static entry of the codec's table.
        let cfg = unsafe { &*cfg };
        if cfg.device_type == ffi::AVHWDeviceType_AV_HWDEVICE_TYPE_CUDA
            && cfg.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0
        {
            return true;
        }
        i += 1;
    }
}

/// `get_format` hook: take CUDA frames when offered, else FFmpeg's default software choice
/// (e.g. a 4:4:4 profile NVDEC cannot decode), which the pipeline notices and reports.
pub(crate) unsafe extern "C" fn prefer_cuda(
    ctx: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    // SAFETY: FFmpeg passes a list terminated by AV_PIX_FMT_NONE.
    unsafe {
        let mut p = formats;
        while *p != ffi::AVPixelFormat_AV_PIX_FMT_NONE {
            if *p == ffi::AVPixelFormat_AV_PIX_FMT_CUDA {
                return *p;
            }
            p = p.add(1);
        }
        ffi::avcodec_default_get_format(ctx, formats)
    }
}

/// The software pixel format behind a CUDA frame (nv12, p010le…).
pub(crate) fn hw_sw_format(frame: &ffi::AVFrame) -> Option<ffi::AVPixelFormat> {
    if frame.hw_frames_ctx.is_null() {
        return None;
    }
    // SAFETY: a frame's hw_frames_ctx buffer holds an AVHWFramesContext.
    let frames = unsafe { &*((*frame.hw_frames_ctx).data as *const ffi::AVHWFramesContext) };
    Some(frames.sw_format)
}
