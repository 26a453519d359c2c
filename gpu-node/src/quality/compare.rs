//! Full-reference metrics of a distorted file against its reference: both decoded frame by
//! frame in presentation order, the distorted one scaled (bicubic) to the reference's size,
//! and every pair scored by libvmaf (VMAF, PSNR, SSIM) in one pass.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::frames::{pix_fmt_for_depth, FrameReader};
use super::pooling::Pooled;
use super::vmaf::{FrameScores, Vmaf};
use super::QualityError;

/// Metrics of one pair of files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Frame pairs scored.
    pub frames: u32,
    /// The size the pairs were compared at (the reference's).
    pub width: u32,
    pub height: u32,
    /// VMAF (vmaf_v0.6.1), 0–100.
    pub vmaf: Pooled,
    /// PSNR of luma, dB (libvmaf caps an identical frame at 60 dB for 8-bit).
    pub psnr_y: Pooled,
    /// PSNR of Y, Cb, Cr weighted 6:1:1 per frame (the AOM/JVET convention), dB.
    pub psnr_yuv: Pooled,
    /// SSIM of luma, 0–1.
    pub ssim: Pooled,
}

/// How much the two files' frame counts may differ before they are called unrelated: an
/// encoder may drop or repeat a frame at the very end, nothing more.
fn tolerated_gap(frames: u64) -> u64 {
    (frames / 100).max(2)
}

/// Score `distorted` against `reference`. `threads` is libvmaf's worker count.
pub fn compare(reference: &Path, distorted: &Path, threads: u32) -> Result<Scores, QualityError> {
    let mut r = FrameReader::open(reference)?;
    let mut d = FrameReader::open(distorted)?;
    let info = r.info();
    let (fmt, bpc) = pix_fmt_for_depth(info.bit_depth);
    let (w, h) = (info.width & !1, info.height & !1);
    r.convert_to(w, h, fmt);
    d.convert_to(w, h, fmt);
    let mut vmaf = Vmaf::new(w, h, bpc, threads)?;
    let (mut rn, mut dn) = (0u64, 0u64);
    loop {
        let rf = r.next_frame()?;
        let df = d.next_frame()?;
        rn += rf.is_some() as u64;
        dn += df.is_some() as u64;
        let (Some(rf), Some(df)) = (rf, df) else {
            // Count what is left on the longer side.
            while r.next_frame()?.is_some() {
                rn += 1;
            }
            while d.next_frame()?.is_some() {
                dn += 1;
            }
            break;
        };
        let row = |f: &rsmpeg::avutil::AVFrame, plane: usize, y: usize| -> *const u8 {
            // SAFETY: a decoded/converted frame holds `height` rows of `linesize` bytes per
            // plane; libvmaf reads `width` samples of each row.
            unsafe { f.data[plane].offset(f.linesize[plane] as isize * y as isize) as *const u8 }
        };
        vmaf.push(&|p, y| row(&rf, p, y), &|p, y| row(&df, p, y))?;
    }
    if rn.abs_diff(dn) > tolerated_gap(rn.max(dn)) || vmaf.frames() == 0 {
        return Err(QualityError::FrameCount {
            reference: rn,
            distorted: dn,
        });
    }
    let frames = vmaf.finish()?;
    pool(&frames, w, h)
}

/// Pool per-frame scores into [`Scores`].
pub fn pool(frames: &[FrameScores], width: u32, height: u32) -> Result<Scores, QualityError> {
    let of = |f: &dyn Fn(&FrameScores) -> f64| {
        Pooled::of(&frames.iter().map(f).collect::<Vec<_>>())
            .ok_or_else(|| QualityError::Vmaf("no finite scores to pool".into()))
    };
    Ok(Scores {
        frames: frames.len() as u32,
        width,
        height,
        vmaf: of(&|f| f.vmaf)?,
        psnr_y: of(&|f| f.psnr_y)?,
        psnr_yuv: of(&|f| (6.0 * f.psnr_y + f.psnr_cb + f.psnr_cr) / 8.0)?,
        ssim: of(&|f| f.ssim)?,
    })
}
