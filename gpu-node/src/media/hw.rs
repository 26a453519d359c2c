//! NVDEC through FFmpeg's `cuda` hwaccel: one CUDA device per process, created once, and the
//! decoder hook that asks for CUDA frames.

use std::sync::OnceLock;

use rsmpeg::ffi;

use super::av_error_text;

/// A reference to FFmpeg's CUDA device context.
#[derive(Clone, Copy)]
struct Device(*mut ffi::AVBufferRef);

// SAFETY: an AVHWDeviceContext is immutable once created and FFmpeg takes new references to it
// from any thread (av_buffer_ref is atomic).
unsafe impl Send for Device {}
// SAFETY: as for Send: nothing mutates the device context after creation.
unsafe impl Sync for Device {}

/// FFmpeg's CUDA device context on GPU `index` (its CUDA index), or why there is none
/// (FFmpeg's words). Each device is created once and kept for the process's life; a failure is
/// not kept, so a GPU that comes back after a fault opens again.
pub(crate) fn cuda_device(index: u32) -> Result<*mut ffi::AVBufferRef, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DEVICES: OnceLock<Mutex<HashMap<u32, Device>>> = OnceLock::new();
    let devices = DEVICES.get_or_init(Default::default);
    let mut devices = devices.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = devices.get(&index) {
        return Ok(d.0);
    }
    super::init_ffmpeg_logging();
    let name = std::ffi::CString::new(index.to_string()).expect("digits");
    let mut dev: *mut ffi::AVBufferRef = std::ptr::null_mut();
    // SAFETY: plain FFmpeg call with an out-pointer; on failure nothing is allocated.
    let rc = unsafe {
        ffi::av_hwdevice_ctx_create(
            &mut dev,
            ffi::AVHWDeviceType_AV_HWDEVICE_TYPE_CUDA,
            name.as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc < 0 || dev.is_null() {
        return Err(format!("no CUDA device {index}: {}", av_error_text(rc)));
    }
    devices.insert(index, Device(dev));
    Ok(dev)
}

/// Whether an NVENC failure's message is the device's fault rather than the input's or the
/// load's: a device that cannot be created, CUDA errors, an unsupported or lost GPU.
pub(crate) fn is_device_fault(message: &str) -> bool {
    // Not "out of memory": that is how NVENC says its session limit is reached (load, not a
    // fault).
    const DEVICE: &[&str] = &[
        "no CUDA device",
        "CUDA_ERROR",
        "cuCtx",
        "cuInit",
        "unsupported device",
        "No capable devices",
        "GPU is lost",
    ];
    DEVICE.iter().any(|d| message.contains(d))
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

/// Where one job's GPU work runs: the node's placement, or — outside a node (a library caller,
/// a test, a bench) — CUDA device 0 when it opened, with NVENC as the probe found it.
pub(crate) struct Target {
    /// The GPU for NVDEC and NVENC (`None`: the CPU).
    pub gpu: Option<u32>,
    /// Whether the job may open an NVENC session.
    pub nvenc: bool,
    placement: Option<crate::host::Placement>,
}

impl Target {
    /// The current job's target under `policy`.
    pub(crate) fn current(policy: kiln_protocol::HardwarePolicy, cuda_opened: bool) -> Self {
        if policy == kiln_protocol::HardwarePolicy::Cpu {
            return Self {
                gpu: None,
                nvenc: false,
                placement: None,
            };
        }
        match crate::host::scope::current() {
            Some(p) => Self {
                gpu: p.gpu,
                nvenc: p.nvenc && p.gpu.is_some(),
                placement: Some(p),
            },
            None => Self {
                gpu: cuda_opened.then_some(0),
                nvenc: true,
                placement: None,
            },
        }
    }

    /// The GPU failed with `reason` (its fault, not the input's): tell the node, and move to
    /// the GPU it offers instead, or to the CPU. Returns where the job goes.
    pub(crate) fn fault(&mut self, reason: &str) -> Option<u32> {
        let gpu = self.gpu?;
        self.gpu = match &self.placement {
            Some(p) => p.fault(gpu, reason),
            None => {
                tracing::warn!(gpu, %reason, "GPU device fault");
                None
            }
        };
        self.nvenc &= self.gpu.is_some();
        self.gpu
    }

    /// `choice`, or the CPU encoder when it is NVENC and this job has no session.
    pub(crate) fn restrict(
        &self,
        codec: kiln_protocol::VideoCodec,
        choice: super::encoder::EncoderChoice,
    ) -> super::encoder::EncoderChoice {
        if !choice.is_nvenc() || self.nvenc {
            return choice;
        }
        let cpu = codec.cpu_encoder();
        super::encoder::EncoderChoice {
            name: cpu,
            fallback: Some(format!(
                "no NVENC session free on this node's healthy GPUs; encoded with {cpu}"
            )),
        }
    }

    /// Tell an NVENC encoder which GPU to open its session on.
    pub(crate) fn on_gpu(&self, encoder: &str, settings: &mut super::encoder::EncoderSettings) {
        if let (true, Some(gpu)) = (encoder.ends_with("_nvenc"), self.gpu) {
            settings.options.push(("gpu".into(), gpu.to_string()));
        }
    }
}
