//! One chunk: the source's `[start, end)` encoded alone, video only, into its own MP4 (exact
//! timestamps, unlike Matroska's milliseconds), through the same pass as a whole-title encode
//! with the same encoder, preset and rate; the trim makes its first frame a fresh keyframe.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use kiln_protocol::{Container, VideoParams};

use super::plan::ChunkSpan;
use crate::media::edit::EditFiles;
use crate::media::encoder::{Pass, RateSpec};
use crate::media::transcode::Job;
use crate::media::MediaError;

/// What a chunk's encode produced.
#[derive(Debug, Clone)]
pub struct ChunkOutcome {
    pub index: usize,
    pub frames: u64,
    pub video_bytes: u64,
    pub encoder: &'static str,
}

/// The rate every chunk of a title encodes at: the title's own one-pass rate (a CRF as it is,
/// a bitrate as the same cap in every chunk). Size and VMAF targets need the title's budget
/// split over the chunks first, which this does not do yet.
pub(crate) fn chunk_rate(params: &VideoParams) -> Result<RateSpec, MediaError> {
    RateSpec::one_pass(params).ok_or_else(|| {
        MediaError::InvalidSettings(format!(
            "a {} output is not encoded in chunks yet; use crf or bitrate",
            params.rate.method()
        ))
    })
}

/// Encode `span` of `input` to `output` as `params` say (their edit must be empty: the chunk's
/// span is the only trim).
pub fn encode_chunk(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    span: &ChunkSpan,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<ChunkOutcome, MediaError> {
    if !params.edit.is_empty() {
        return Err(MediaError::InvalidSettings(
            "an edited output is not encoded in chunks".into(),
        ));
    }
    let rate = chunk_rate(params)?;
    let mut p = params.clone();
    p.container = Container::Mp4;
    p.edit.start_s = Some(span.start_s);
    p.edit.end_s = span.end_s.is_finite().then_some(span.end_s);
    let mut job = Job::plan(input, output, &p, &EditFiles::default())?;
    let r = job.pass(rate, Pass::Only, false, cancel, &mut |pr| {
        on_progress(pr.percent)
    });
    job.cleanup_scratch();
    let encoder = job.encoder_name();
    let r = r.inspect_err(|_| {
        let _ = std::fs::remove_file(output);
    })?;
    Ok(ChunkOutcome {
        index: span.index,
        frames: r.frames,
        video_bytes: r.video_bytes,
        encoder,
    })
}
