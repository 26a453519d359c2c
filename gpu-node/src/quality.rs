//! Quality measurement and targeting: VMAF (libvmaf, standard model), PSNR and SSIM of an
//! encode against its source, frame-aligned and pooled; sampled scenes; and the CRF search
//! behind `target_vmaf` outputs and `kiln-bench tune`.

pub mod compare;
pub mod frames;
pub mod hull;
pub mod per_title;
pub mod pooling;
pub mod samples;
pub mod search;
pub mod target;
pub mod vmaf;

pub use compare::{compare, Scores};
pub use pooling::Pooled;

use crate::media::MediaError;

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("libvmaf: {0}")]
    Vmaf(String),
    /// The two files are not the same video (or one was cut short).
    #[error("the files do not line up: {reference} reference frames, {distorted} distorted")]
    FrameCount { reference: u64, distorted: u64 },
}

impl QualityError {
    /// As a job failure: media errors keep their code; a measurement failure is an encode
    /// failure (not retryable: the same inputs fail the same way).
    pub fn into_media(self) -> MediaError {
        match self {
            Self::Media(e) => e,
            other => MediaError::Encode(format!("quality measurement: {other}")),
        }
    }
}
