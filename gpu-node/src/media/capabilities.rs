//! Which codecs actually open on this machine — not just which names FFmpeg knows. Probed once
//! per process and cached; NVENC/NVDEC are dlopened by FFmpeg at run time, so a name can exist
//! and still fail to open where there is no driver or no encode engine (the H100 has none).

use std::sync::OnceLock;

use rsmpeg::avcodec::{AVCodec, AVCodecContext};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;

use super::{av_error_text, init_ffmpeg_logging};

/// One codec's probe result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodecProbe {
    pub name: &'static str,
    /// Whether the codec could be opened with a small test configuration.
    pub available: bool,
    /// Why not, in FFmpeg's words, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What this node's FFmpeg can do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MediaCapabilities {
    pub encoders: Vec<CodecProbe>,
    pub decoders: Vec<CodecProbe>,
    /// Whether a CUDA device opens for FFmpeg's `cuda` hwaccel (NVDEC decode, `scale_cuda`).
    pub cuda: CodecProbe,
}

impl MediaCapabilities {
    /// Whether the named encoder opened.
    pub fn encoder(&self, name: &str) -> bool {
        self.encoders.iter().any(|c| c.name == name && c.available)
    }
}

/// The encoders every node probes.
pub(crate) const ENCODERS: &[&str] = &[
    "libx264",
    "libx265",
    "libsvtav1",
    "libvpx-vp9",
    "h264_nvenc",
    "hevc_nvenc",
];
const DECODERS: &[&str] = &[
    "h264",
    "hevc",
    "av1",
    "vp9",
    "h264_cuvid",
    "hevc_cuvid",
    "av1_cuvid",
    "vp9_cuvid",
];

impl CodecProbe {
    fn available(name: &'static str) -> Self {
        Self {
            name,
            available: true,
            reason: None,
        }
    }

    fn unavailable(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            available: false,
            reason: Some(reason.into()),
        }
    }
}

/// FFmpeg's own words for an rsmpeg error.
fn ffmpeg_reason(e: &RsmpegError) -> String {
    e.raw_error()
        .map(av_error_text)
        .unwrap_or_else(|| e.to_string())
}

const NOT_BUILT: &str = "not in this FFmpeg build";

/// `gpu=<index>` for a codec opened on one GPU (NVENC's and cuvid's option).
fn on_gpu(gpu: Option<u32>) -> Option<AVDictionary> {
    gpu.map(|g| {
        let v = std::ffi::CString::new(g.to_string()).expect("digits");
        AVDictionary::new(c"gpu", &v, 0)
    })
}

fn probe_encoder(name: &'static str, gpu: Option<u32>) -> CodecProbe {
    let cname = std::ffi::CString::new(name).expect("static name");
    let Some(codec) = AVCodec::find_encoder_by_name(&cname) else {
        return CodecProbe::unavailable(name, NOT_BUILT);
    };
    let mut ctx = AVCodecContext::new(&codec);
    ctx.set_width(256);
    ctx.set_height(144);
    ctx.set_pix_fmt(ffi::AVPixelFormat_AV_PIX_FMT_YUV420P);
    ctx.set_time_base(ffi::AVRational { num: 1, den: 25 });
    ctx.set_framerate(ffi::AVRational { num: 25, den: 1 });
    // x265 prints a banner and a summary to stderr at its own log level, not FFmpeg's.
    let opts = if name == "libx265" {
        Some(AVDictionary::new(c"x265-params", c"log-level=none", 0))
    } else {
        on_gpu(gpu)
    };
    if let Err(e) = ctx.open(opts) {
        return CodecProbe::unavailable(name, ffmpeg_reason(&e));
    }
    // Encode one frame: proves the encoder works, and SVT-AV1 1.4 hangs in deinit when closed
    // having seen no frame at all.
    match encode_one_frame(&mut ctx) {
        Ok(()) => CodecProbe::available(name),
        Err(reason) => CodecProbe::unavailable(name, reason),
    }
}

fn encode_one_frame(ctx: &mut AVCodecContext) -> Result<(), String> {
    let mut frame = AVFrame::new();
    frame.set_width(ctx.width);
    frame.set_height(ctx.height);
    frame.set_format(ffi::AVPixelFormat_AV_PIX_FMT_YUV420P);
    frame.alloc_buffer().map_err(|e| ffmpeg_reason(&e))?;
    for plane in 0..3 {
        let rows = if plane == 0 {
            ctx.height
        } else {
            ctx.height / 2
        };
        let len = (frame.linesize[plane] * rows) as usize;
        // SAFETY: alloc_buffer allocated `linesize * rows` bytes for each plane.
        unsafe { std::ptr::write_bytes(frame.data[plane], if plane == 0 { 16 } else { 128 }, len) };
    }
    frame.set_pts(0);
    ctx.send_frame(Some(&frame))
        .map_err(|e| ffmpeg_reason(&e))?;
    ctx.send_frame(None).map_err(|e| ffmpeg_reason(&e))?;
    let mut packets = 0;
    while ctx.receive_packet().is_ok() {
        packets += 1;
    }
    if packets == 0 {
        return Err("the encoder produced no output".into());
    }
    Ok(())
}

fn probe_decoder(name: &'static str, gpu: Option<u32>) -> CodecProbe {
    let cname = std::ffi::CString::new(name).expect("static name");
    let Some(codec) = AVCodec::find_decoder_by_name(&cname) else {
        return CodecProbe::unavailable(name, NOT_BUILT);
    };
    let mut ctx = AVCodecContext::new(&codec);
    ctx.set_width(256);
    ctx.set_height(144);
    match ctx.open(on_gpu(gpu)) {
        Ok(_) => CodecProbe::available(name),
        Err(e) => CodecProbe::unavailable(name, ffmpeg_reason(&e)),
    }
}

/// What opens on one GPU.
#[derive(Debug, Clone)]
pub struct GpuCodecs {
    /// FFmpeg's CUDA device on it, or why not.
    pub cuda: Result<(), String>,
    /// NVENC encoders that opened on it.
    pub encoders: Vec<String>,
    /// NVDEC (cuvid) decoders that opened on it.
    pub decoders: Vec<String>,
}

/// Open the CUDA device and every NVENC and NVDEC codec on GPU `index` (its CUDA index).
pub fn probe_on_gpu(index: u32) -> GpuCodecs {
    init_ffmpeg_logging();
    let opened = |probe: CodecProbe| probe.available.then(|| probe.name.to_string());
    GpuCodecs {
        cuda: super::hw::cuda_device(index).map(|_| ()),
        encoders: ENCODERS
            .iter()
            .filter(|n| n.ends_with("_nvenc"))
            .filter_map(|n| opened(probe_encoder(n, Some(index))))
            .collect(),
        decoders: DECODERS
            .iter()
            .filter(|n| n.ends_with("_cuvid"))
            .filter_map(|n| opened(probe_decoder(n, Some(index))))
            .collect(),
    }
}

/// Probe every codec Kiln may use, once; later calls return the cached answer.
pub fn capabilities() -> &'static MediaCapabilities {
    static CAPS: OnceLock<MediaCapabilities> = OnceLock::new();
    CAPS.get_or_init(|| {
        init_ffmpeg_logging();
        let caps = MediaCapabilities {
            encoders: ENCODERS.iter().map(|n| probe_encoder(n, None)).collect(),
            decoders: DECODERS.iter().map(|n| probe_decoder(n, None)).collect(),
            cuda: match super::hw::cuda_device(0) {
                Ok(_) => CodecProbe::available("cuda"),
                Err(reason) => CodecProbe::unavailable("cuda", reason),
            },
        };
        for c in caps
            .encoders
            .iter()
            .chain(&caps.decoders)
            .chain([&caps.cuda])
            .filter(|c| !c.available)
        {
            tracing::debug!(
                codec = c.name,
                reason = c.reason.as_deref().unwrap_or(""),
                "codec unavailable on this node"
            );
        }
        let (cpu, nvenc, nvdec) = summary(&caps);
        tracing::info!(%cpu, %nvenc, %nvdec, "video codecs probed");
        caps
    })
}

/// The probe in three phrases for its one log line: the CPU encoders that opened, then NVENC
/// and NVDEC — the codecs that opened, or why none did.
fn summary(caps: &MediaCapabilities) -> (String, String, String) {
    fn phrase(codecs: Vec<&CodecProbe>) -> String {
        let open: Vec<&str> = codecs
            .iter()
            .filter(|c| c.available)
            .map(|c| c.name)
            .collect();
        if !open.is_empty() {
            return open.join(", ");
        }
        let why = codecs.iter().find_map(|c| c.reason.as_deref());
        format!("none ({})", why.unwrap_or("not probed"))
    }
    let nvenc = |c: &&CodecProbe| c.name.ends_with("_nvenc");
    (
        phrase(caps.encoders.iter().filter(|c| !nvenc(c)).collect()),
        phrase(caps.encoders.iter().filter(nvenc).collect()),
        phrase(
            caps.decoders
                .iter()
                .filter(|c| c.name.ends_with("_cuvid"))
                .collect(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_codecs_open_and_results_are_cached() {
        let caps = capabilities();
        for name in ["libx264", "libx265", "libsvtav1", "libvpx-vp9"] {
            let c = caps.encoders.iter().find(|c| c.name == name).unwrap();
            assert!(c.available, "{name}: {:?}", c.reason);
        }
        let h264 = caps.decoders.iter().find(|c| c.name == "h264").unwrap();
        assert!(h264.available);
        // Every unavailable codec says why.
        assert!(caps
            .encoders
            .iter()
            .chain(&caps.decoders)
            .all(|c| c.available || c.reason.is_some()));
        assert!(std::ptr::eq(caps, capabilities()));
        let (cpu, nvenc, nvdec) = summary(caps);
        assert!(cpu.starts_with("libx264, libx265"), "{cpu}");
        if !caps.encoder("h264_nvenc") {
            assert!(nvenc.starts_with("none ("), "{nvenc}");
        }
        assert!(!nvdec.is_empty());
    }

    /// On a GPU machine: NVDEC must open; NVENC is reported either way (the H100 has none).
    #[test]
    #[ignore = "needs GPU"]
    fn nvdec_opens_on_a_gpu_node() {
        let caps = capabilities();
        eprintln!("{}", serde_json::to_string_pretty(caps).unwrap());
        let cuvid = caps
            .decoders
            .iter()
            .find(|c| c.name == "h264_cuvid")
            .unwrap();
        assert!(cuvid.available, "{:?}", cuvid.reason);
        assert!(caps.cuda.available, "{:?}", caps.cuda.reason);
    }
}
