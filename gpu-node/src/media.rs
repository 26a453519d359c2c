//! The media pipeline (rsmpeg over FFmpeg): probe, decode, scale, encode, mux.

mod audio;
pub mod capabilities;
pub mod chunked;
pub mod edit;
pub mod encoder;
pub mod error;
mod filter;
pub mod geometry;
mod hw;
pub mod ladder;
pub(crate) mod pipeline;
pub mod probe;
pub mod stills;
pub mod transcode;

pub use capabilities::{capabilities, MediaCapabilities};
pub use edit::{edited_info, EditFiles};
pub use error::MediaError;
pub use ladder::{encode_ladder, encode_ladder_edited, LadderOutcome};
pub use probe::{probe, MediaInfo};
pub use transcode::{transcode, transcode_edited, Progress, TranscodeOutcome};

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Once;

use rsmpeg::ffi;

/// Quiet FFmpeg's own logging to errors only, once per process; Kiln logs what matters itself.
pub fn init_ffmpeg_logging() {
    static ONCE: Once = Once::new();
    // SAFETY: av_log_set_level only stores the level; it is called once, before any logging
    // matters.
    ONCE.call_once(|| unsafe { ffi::av_log_set_level(ffi::AV_LOG_ERROR as i32) });
}

/// Threads each decoder runs on (0 until [`bound_decoders`] is called: then one job's share).
static DECODER_THREADS: AtomicI32 = AtomicI32::new(0);
/// The most pixels a decoded picture may have.
static DECODER_MAX_PIXELS: AtomicI64 = AtomicI64::new(i64::MAX);

/// Bound every decoder this process opens from now on: `threads` each (FFmpeg's automatic
/// count would give every job all the cores), and pictures of at most `max_pixels` (a stream
/// whose frames grow past the source limits mid-way fails to decode instead of allocating).
pub fn bound_decoders(threads: i32, max_pixels: u64) {
    DECODER_THREADS.store(threads.max(1), Ordering::Relaxed);
    DECODER_MAX_PIXELS.store(max_pixels.min(i64::MAX as u64) as i64, Ordering::Relaxed);
}

/// Apply the process's decoder bounds to a decoder context before it is opened.
pub(crate) fn bound_decoder(raw: &mut ffi::AVCodecContext) {
    raw.thread_count = match DECODER_THREADS.load(Ordering::Relaxed) {
        0 => kiln_protocol::limits::decoder_threads(1),
        n => n,
    };
    raw.max_pixels = DECODER_MAX_PIXELS.load(Ordering::Relaxed);
}

/// Run `f` with FFmpeg's own log silenced: the capability probe opens codecs that are expected
/// to fail ("Cannot load libcuda.so.1" on a host without a GPU), and says what it found itself,
/// once. FFmpeg's level is global, so this is for the probe at start, before jobs run.
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    init_ffmpeg_logging();
    // SAFETY: av_log_set_level only stores the level.
    unsafe { ffi::av_log_set_level(ffi::AV_LOG_QUIET) };
    let r = f();
    // SAFETY: as above; back to the level init_ffmpeg_logging set.
    unsafe { ffi::av_log_set_level(ffi::AV_LOG_ERROR as i32) };
    r
}

/// The FFmpeg build linked in (`av_version_info`, e.g. `5.1.9-0+deb12u1`).
pub fn ffmpeg_version() -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(ffi::av_version_info()) }
        .to_string_lossy()
        .into_owned()
}

/// FFmpeg's own words for an error code (`av_strerror`).
pub(crate) fn av_error_text(code: i32) -> String {
    let mut buf = [0 as std::os::raw::c_char; 256];
    // SAFETY: `buf` is a live buffer of the length passed; av_strerror NUL-terminates what it
    // writes, and the CStr is read only on success.
    unsafe {
        if ffi::av_strerror(code, buf.as_mut_ptr(), buf.len()) < 0 {
            return format!("FFmpeg error {code}");
        }
        std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Width after the sample aspect ratio is applied (what a player shows), at least 1.
pub(crate) fn display_width(width: i32, sar: ffi::AVRational) -> u32 {
    if sar.num > 0 && sar.den > 0 && sar.num != sar.den {
        ((width as f64 * sar.num as f64 / sar.den as f64).round() as u32).max(1)
    } else {
        width.max(1) as u32
    }
}

/// The container's duration in seconds, 0 when unknown.
pub(crate) fn container_duration_s(ctx: &rsmpeg::avformat::AVFormatContextInput) -> f64 {
    // AV_NOPTS_VALUE is i64::MIN, so "> 0" also excludes it.
    if ctx.duration > 0 {
        ctx.duration as f64 / ffi::AV_TIME_BASE as f64
    } else {
        0.0
    }
}

pub(crate) fn path_cstring(path: &Path) -> Result<CString, MediaError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| MediaError::Io(format!("path contains a NUL byte: {}", path.display())))
}
