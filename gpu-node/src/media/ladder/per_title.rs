//! A per-title ladder on the media side: its rungs planned from the quality module's measured
//! grid, and each finished rendition scored against the source.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use kiln_protocol::event::RenditionReport;
use kiln_protocol::{LadderParams, PerTitle, PerTitleReport, Preset, Resolution};

use super::RungPlan;
use crate::media::encoder::RateSpec;
use crate::media::{geometry, MediaError, MediaInfo};
use crate::quality::{self, per_title};

/// Measure the source and plan the rungs [`per_title::choose`] picks, each at its probe's CRF.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    input: &Path,
    info: &MediaInfo,
    params: &LadderParams,
    preset: Preset,
    pt: PerTitle,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<(Vec<RungPlan>, PerTitleReport), MediaError> {
    let choice = per_title::choose(
        input,
        info,
        params.codec,
        preset,
        params.hardware,
        pt.target_vmaf,
        scratch,
        cancel,
        on_progress,
    )
    .map_err(quality::QualityError::into_media)?;
    let rungs = choice
        .rungs
        .iter()
        .map(|p| {
            let resolution = Resolution::Height { height: p.height };
            Ok(RungPlan {
                geometry: geometry::plan(info, Some(resolution), false)
                    .map_err(MediaError::InvalidSettings)?,
                rate: RateSpec::Crf(p.crf),
                target_kbps: None,
                quality: None,
                per_title: Some(*p),
            })
        })
        .collect::<Result<Vec<_>, MediaError>>()?;
    if rungs.is_empty() {
        return Err(MediaError::Encode(
            "the per-title search measured no usable rung".into(),
        ));
    }
    Ok((rungs, choice.report))
}

/// Score every video rendition of the ladder in `dir` against `input` (its init segment and
/// media segments joined into one fragmented MP4 in `scratch`, as a player would play them)
/// and record the VMAF on each report.
pub fn score_renditions(
    input: &Path,
    dir: &Path,
    renditions: &mut [RenditionReport],
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<(), MediaError> {
    std::fs::create_dir_all(scratch).map_err(|e| MediaError::Io(format!("scratch: {e}")))?;
    let threads = quality::target::default_threads();
    for r in renditions.iter_mut() {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        let joined = scratch.join("rendition.mp4");
        join_segments(dir, &r.playlist, &joined)?;
        let scores = quality::compare(input, &joined, threads);
        let _ = std::fs::remove_file(&joined);
        let scores = scores.map_err(quality::QualityError::into_media)?;
        r.vmaf_measured = Some(quality::target::round2(scores.vmaf.mean));
    }
    Ok(())
}

/// [`score_renditions`], then `met`: whether the top one reached the target.
pub(super) fn measure(
    input: &Path,
    dir: &Path,
    renditions: &mut [RenditionReport],
    report: &mut PerTitleReport,
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<(), MediaError> {
    score_renditions(input, dir, renditions, scratch, cancel)?;
    report.met = renditions
        .first()
        .and_then(|r| r.vmaf_measured)
        .is_some_and(|v| v >= report.target_vmaf);
    Ok(())
}

/// The bytes of a rendition's video (init segment and media segments) in the ladder `dir`.
pub fn video_bytes(dir: &Path, playlist: &str) -> Result<u64, MediaError> {
    segment_files(dir, playlist)?
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .map(|m| m.len())
                .map_err(|e| MediaError::Io(format!("{f}: {e}")))
        })
        .sum()
}

/// Stream `N`'s init segment and media segments, in play order (FFmpeg's dash muxer names
/// them `init-streamN.m4s` and `chunk-streamN-00001.m4s`…; `playlist` is `media_N.m3u8`).
fn segment_files(dir: &Path, playlist: &str) -> Result<Vec<String>, MediaError> {
    let n = super::manifest::stream_of(playlist)
        .ok_or_else(|| MediaError::Io(format!("unexpected playlist name {playlist}")))?;
    let prefix = format!("chunk-stream{n}-");
    let mut chunks: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| MediaError::Io(format!("list the ladder: {e}")))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with(&prefix) && f.ends_with(".m4s"))
        .collect();
    // Zero-padded numbers: name order is play order.
    chunks.sort();
    chunks.insert(0, format!("init-stream{n}.m4s"));
    Ok(chunks)
}

/// Join a rendition's segments into one fragmented MP4 at `out`.
fn join_segments(dir: &Path, playlist: &str, out: &Path) -> Result<(), MediaError> {
    let io = |what: &str, e: std::io::Error| MediaError::Io(format!("{what}: {e}"));
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(out).map_err(|e| io("create the joined rendition", e))?,
    );
    for f in segment_files(dir, playlist)? {
        let mut r = std::fs::File::open(dir.join(&f)).map_err(|e| io(&f, e))?;
        std::io::copy(&mut r, &mut w).map_err(|e| io(&f, e))?;
    }
    std::io::Write::flush(&mut w).map_err(|e| io("write the joined rendition", e))
}
