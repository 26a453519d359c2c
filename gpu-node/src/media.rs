//! The media pipeline (rsmpeg over FFmpeg): probe, decode, scale, encode, mux.

pub mod capabilities;
pub mod error;
pub mod probe;
pub mod transcode;

pub use capabilities::{capabilities, MediaCapabilities};
pub use error::MediaError;
pub use probe::{probe, MediaInfo};
pub use transcode::{transcode, Progress, TranscodeOutcome};

use std::ffi::CString;
use std::path::Path;
use std::sync::Once;

use rsmpeg::ffi;

/// Quiet FFmpeg's own logging to errors only, once per process; Kiln logs what matters itself.
pub fn init_ffmpeg_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe { ffi::av_log_set_level(ffi::AV_LOG_ERROR as i32) });
}

/// FFmpeg's own words for an error code (`av_strerror`).
pub(crate) fn av_error_text(code: i32) -> String {
    let mut buf = [0 as std::os::raw::c_char; 256];
    unsafe {
        if ffi::av_strerror(code, buf.as_mut_ptr(), buf.len()) < 0 {
            return format!("FFmpeg error {code}");
        }
        std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

pub(crate) fn path_cstring(path: &Path) -> Result<CString, MediaError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| MediaError::Io(format!("path contains a NUL byte: {}", path.display())))
}
