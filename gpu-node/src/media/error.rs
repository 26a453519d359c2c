//! Errors of the media pipeline, each mapped to a stable job error code.

use kiln_protocol::JobErrorCode;
use rsmpeg::error::RsmpegError;

use super::av_error_text;

/// Why a probe or transcode failed; the message carries FFmpeg's own words.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// FFmpeg could not open the input as media.
    #[error("not a readable media file: {0}")]
    InvalidMedia(String),
    /// The input has no video stream.
    #[error("the input has no video stream")]
    NoVideoStream,
    /// Decoding failed part-way.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The encoder is missing or refused its settings.
    #[error("encoder unavailable: {0}")]
    UnsupportedCodec(String),
    /// The request cannot be carried out on this source.
    #[error("{0}")]
    InvalidSettings(String),
    /// Encoding or muxing failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Local file trouble.
    #[error("I/O error: {0}")]
    Io(String),
}

impl MediaError {
    /// The stable code the job reports.
    pub fn code(&self) -> JobErrorCode {
        match self {
            Self::InvalidMedia(_) => JobErrorCode::InvalidMedia,
            Self::NoVideoStream => JobErrorCode::NoVideoStream,
            Self::Decode(_) => JobErrorCode::DecodeFailed,
            Self::UnsupportedCodec(_) => JobErrorCode::UnsupportedCodec,
            Self::InvalidSettings(_) => JobErrorCode::InvalidSettings,
            Self::Encode(_) => JobErrorCode::EncodeFailed,
            Self::Cancelled => JobErrorCode::Cancelled,
            Self::Io(_) => JobErrorCode::StorageFailed,
        }
    }
}

/// Describe an rsmpeg error with FFmpeg's own text where it carries an FFmpeg code.
pub(crate) fn describe(context: &str, err: &RsmpegError) -> String {
    match err.raw_error() {
        Some(code) => format!("{context}: {} ({err})", av_error_text(code)),
        None => format!("{context}: {err}"),
    }
}
