//! A ladder in chunks (`chunk_secs`). The title is cut on its segment cadence: every chunk is a
//! whole number of segments, so each chunk boundary is a segment boundary and no segment spans
//! two encodes. Every rendition of every chunk is encoded alone with the whole ladder's keyframe
//! settings (closed GOPs of one segment's frames, the rendition's aspect; a bitrate rung in two
//! passes, as a short chunk's one pass lands short). Each rendition's chunks are joined
//! ([`crate::media::chunked::assemble`], frame counts checked); the joined renditions are
//! packaged once with the audio ([`super::package`]) and measured as a whole ladder's are.
//! [`encode`] runs the (chunk, rendition) pairs over local slots; a fleet's title node queues
//! the same pairs ([`LadderPlan::items`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::ladder::DASH_MANIFEST;
use kiln_protocol::{
    ChunkEntry, ChunksReport, Container, EncodeReport, LadderChunk, LadderParams, RateControl,
    Resolution, VideoParams,
};

use super::{manifest, package, plan_ladder, run, LadderOutcome, Planned};
use crate::media::chunked::assemble::assemble;
use crate::media::chunked::encode::{encode_counted, Shape};
use crate::media::chunked::{run::on_slots, ChunkSpan, FrameIndex};
use crate::media::encoder::RateSpec;
use crate::media::{MediaError, MediaInfo, Progress};

/// A ladder made ready for its chunks: renditions chosen, the title indexed and cut.
pub(crate) struct LadderPlan {
    pub params: LadderParams,
    pub info: MediaInfo,
    pub planned: Planned,
    pub index: FrameIndex,
    /// The title's chunks.
    pub spans: Vec<ChunkSpan>,
    /// Frames per segment (and per GOP).
    pub gop: u32,
    pub fps: f64,
}

/// One encode of a chunked ladder: rendition `rung` of chunk `chunk`. Its span's index is the
/// item's own (`chunk × renditions + rung`), which names its file and its queue entry.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub span: ChunkSpan,
    pub chunk: usize,
    pub rung: usize,
}

impl LadderPlan {
    /// Every (chunk, rendition) pair, chunk by chunk.
    pub fn items(&self) -> Vec<Item> {
        let n = self.planned.rungs.len();
        self.spans
            .iter()
            .flat_map(|s| {
                (0..n).map(move |rung| Item {
                    span: ChunkSpan {
                        index: s.index * n + rung,
                        ..s.clone()
                    },
                    chunk: s.index,
                    rung,
                })
            })
            .collect()
    }

    /// The settings rendition `rung`'s chunks encode at: the ladder's codec, preset and
    /// hardware, the rung's exact size and its rate (a CRF, or a bitrate capped at 1.5× with a
    /// 2 s buffer, as a whole ladder's rung).
    pub fn rung_params(&self, rung: usize) -> VideoParams {
        let params = &self.params;
        let r = &self.planned.rungs[rung];
        let mut p = VideoParams::crf(params.codec, 23);
        p.rate = match r.rate {
            RateSpec::Capped {
                bps,
                max_bps,
                buffer_bits,
            } => RateControl::Bitrate {
                kbps: (bps / 1000) as u32,
                max_kbps: Some((max_bps / 1000) as u32),
                buffer_kbits: Some((buffer_bits / 1000) as u32),
            },
            RateSpec::Crf(crf) => RateControl::EncoderCrf { crf },
            // Not a rung's rate; kept total all the same.
            RateSpec::Average { bps } => RateControl::Bitrate {
                kbps: (bps / 1000) as u32,
                max_kbps: None,
                buffer_kbits: None,
            },
        };
        p.resolution = Some(Resolution::Exact {
            width: r.geometry.width,
            height: r.geometry.height,
        });
        p.allow_upscale = true;
        p.allow_larger = true;
        p.preset = params.preset;
        p.hardware = params.hardware;
        p.container = Container::Mp4;
        p.chunk_secs = Some(0.0);
        p
    }

    /// How rendition `rung` of chunk `chunk` is shaped: the cadence's GOPs, the aspect that
    /// gives it the top rendition's.
    pub fn ladder_chunk(&self, chunk: usize, rung: usize) -> LadderChunk {
        let sar = run::same_aspect(
            self.planned.rungs[0].geometry,
            self.planned.rungs[rung].geometry,
        );
        LadderChunk {
            rung: rung as u32,
            chunk: chunk as u32,
            gop: self.gop,
            sar: [sar.num, sar.den],
        }
    }

    /// Frames of the whole title.
    pub fn frames(&self) -> u64 {
        self.index.frames.len() as u64
    }
}

/// The rate and shape a ladder's piece encodes at: its rendition's own rate as `params` (the
/// rendition's settings, [`LadderPlan::rung_params`]) say it, a CRF or a capped bitrate, and
/// the cadence and aspect of `l`. The local runner and a fleet node's piece both take it.
pub(crate) fn piece_encode(
    params: &VideoParams,
    l: &LadderChunk,
) -> Result<(RateSpec, Shape), MediaError> {
    let rate = RateSpec::one_pass(params).ok_or_else(|| {
        MediaError::InvalidSettings("a ladder chunk's rate is a CRF or a bitrate".into())
    })?;
    Ok((
        rate,
        Shape::Rung {
            gop: l.gop,
            sar: l.sar,
        },
    ))
}

/// Choose `params`' renditions of `input` (a per-title search in `scratch`, `on_progress`
/// getting the fraction searched), index the title and cut it in chunks of about `target_s`
/// on its segment cadence.
pub(crate) fn prepare(
    input: &Path,
    params: &LadderParams,
    target_s: f64,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<LadderPlan, MediaError> {
    params.validate().map_err(MediaError::InvalidSettings)?;
    if !params.edit.is_empty() {
        return Err(MediaError::InvalidSettings(
            "an edited ladder is not encoded in chunks".into(),
        ));
    }
    let info = crate::media::probe(input)?;
    let planned = plan_ladder(
        input,
        &info,
        params,
        &scratch.join("per-title"),
        cancel,
        on_progress,
    )?;
    let index = FrameIndex::read(input)?;
    if index.frames.is_empty() {
        return Err(MediaError::Decode("the source has no video frames".into()));
    }
    let (gop, fps) = run::cadence(index.frame_rate, params.segment_secs);
    let spans = cut(&index, gop, target_s, fps);
    Ok(LadderPlan {
        params: params.clone(),
        info,
        planned,
        index,
        spans,
        gop,
        fps,
    })
}

/// Cut `index` every whole number of `gop`-frame segments nearest `target_s` at `fps` (one
/// segment at least): the whole ladder's keyframes fall every `gop` frames from the first,
/// so these are where its segments begin. A last chunk under half the length joins the one
/// before.
pub(crate) fn cut(index: &FrameIndex, gop: u32, target_s: f64, fps: f64) -> Vec<ChunkSpan> {
    let f = &index.frames;
    let gop = gop.max(1) as usize;
    let per = ((target_s * fps / gop as f64).round() as usize).max(1) * gop;
    let mut cuts = vec![0usize];
    while f.len() - cuts.last().unwrap() >= per + per / 2 {
        cuts.push(cuts.last().unwrap() + per);
    }
    cuts.iter()
        .enumerate()
        .map(|(n, &c)| {
            let next = cuts.get(n + 1).copied();
            ChunkSpan {
                index: n,
                start_s: f[c].0,
                end_s: next.map(|i| f[i].0).unwrap_or(f64::INFINITY),
                frames: (next.unwrap_or(f.len()) - c) as u64,
                on_keyframe: f[c].1,
                at_scene: false,
            }
        })
        .collect()
}

/// A chunked ladder's encodes, done: each item's file (by item index), the encoder that
/// made them and the chunks' report.
pub(crate) struct Encoded {
    pub files: Vec<PathBuf>,
    pub encoder: String,
    pub chunks: ChunksReport,
}

/// Join each rendition's chunks, package them with `input`'s audio into `out_dir` and measure
/// the tree. Scratch in `scratch`; a failure leaves no tree.
pub(crate) fn finish(
    input: &Path,
    plan: &LadderPlan,
    encoded: Encoded,
    out_dir: &Path,
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<LadderOutcome, MediaError> {
    let r = finish_tree(input, plan, encoded, out_dir, scratch, cancel);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(out_dir);
    }
    r
}

fn finish_tree(
    input: &Path,
    plan: &LadderPlan,
    Encoded {
        files,
        encoder,
        chunks,
    }: Encoded,
    out_dir: &Path,
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<LadderOutcome, MediaError> {
    let params = &plan.params;
    let rungs = &plan.planned.rungs;
    let items = plan.items();
    let total = plan.frames();
    let mut joined = Vec::with_capacity(rungs.len());
    for r in 0..rungs.len() {
        let parts: Vec<(ChunkSpan, PathBuf)> = items
            .iter()
            .filter(|it| it.rung == r)
            .map(|it| (plan.spans[it.chunk].clone(), files[it.span.index].clone()))
            .collect();
        let path = scratch.join(format!("rendition-{r}.mp4"));
        let a = assemble(
            input,
            &parts,
            plan.index.origin_s,
            &path,
            Container::Mp4,
            None,
        )?;
        if a.frames != total {
            return Err(MediaError::Encode(format!(
                "rendition {r} joined holds {} frames of the source's {total}",
                a.frames
            )));
        }
        joined.push(path);
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| MediaError::Io(format!("create the ladder folder: {e}")))?;
    let audio = package::package(
        input,
        &joined,
        &out_dir.join(DASH_MANIFEST),
        plan.gop,
        plan.fps,
        params.audio == kiln_protocol::ladder::LadderAudio::Opus,
    )?;
    for j in &joined {
        let _ = std::fs::remove_file(j);
    }
    let measured = manifest::finish(out_dir, &params.packaging, plan.fps)?;
    let mut renditions = super::renditions(rungs, &measured.video);
    let mut chosen = plan.planned.chosen.clone();
    if let Some(report) = &mut chosen {
        super::measure_per_title(
            input,
            out_dir,
            &mut renditions,
            report,
            &scratch.join("per-title"),
            cancel,
        )?;
    }
    let top = rungs[0].geometry;
    Ok(LadderOutcome {
        width: top.width,
        height: top.height,
        frames: total,
        duration_s: plan.info.duration_s,
        files: measured.files,
        report: EncodeReport {
            encoder,
            decoder: plan.info.video_codec.clone(),
            hardware_fallback: plan.planned.choice.fallback.clone(),
            passes: 1,
            audio: audio.to_string(),
            rotation: top.rotation,
            renditions,
            ladder_notes: plan.planned.notes.clone(),
            keyframe_interval: Some(plan.gop),
            per_title: chosen,
            chunks: Some(chunks),
            ..EncodeReport::default()
        },
    })
}

/// `params`' ladder of `input` into `out_dir` in chunks of about `target_s`, the (chunk,
/// rendition) pairs encoded `slots` at a time, largest chunk first; progress weighs each by
/// its frames × pixels.
pub(crate) fn encode(
    input: &Path,
    out_dir: &Path,
    params: &LadderParams,
    target_s: f64,
    slots: usize,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<LadderOutcome, MediaError> {
    let scratch = out_dir.with_extension("chunks");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| MediaError::Io(format!("create {}: {e}", scratch.display())))?;
    let r = encode_in(
        input,
        out_dir,
        params,
        target_s,
        slots,
        &scratch,
        cancel,
        on_progress,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    r
}

#[allow(clippy::too_many_arguments)]
fn encode_in(
    input: &Path,
    out_dir: &Path,
    params: &LadderParams,
    target_s: f64,
    slots: usize,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<LadderOutcome, MediaError> {
    // A per-title search takes the first 45 %; the encodes run to 95 %.
    let from = if params.per_title.is_some() {
        45.0
    } else {
        0.0
    };
    let plan = prepare(input, params, target_s, scratch, cancel, &mut |f| {
        on_progress(Progress::at(f * from))
    })?;
    let items = plan.items();
    let spans: Vec<ChunkSpan> = items.iter().map(|it| it.span.clone()).collect();
    let file = |it: &Item| scratch.join(format!("item-{:05}.mp4", it.span.index));
    let weight = |it: &Item| {
        let g = plan.planned.rungs[it.rung].geometry;
        it.span.frames as f64 * g.width as f64 * g.height as f64
    };
    let total: f64 = items.iter().map(weight).sum::<f64>().max(1.0);
    let started = Instant::now();
    // The encodes report from their slots; this thread hands their progress on.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, f32)>();
    let placement = crate::host::scope::current();
    let encoded = std::thread::scope(|scope| {
        let encodes = scope.spawn(|| {
            let tx = tx;
            // On this thread too, the pieces run where the node placed the job.
            crate::host::scope::with(placement, || {
                on_slots(&spans, slots, cancel, &|span| {
                    let it = &items[span.index];
                    let started = Instant::now();
                    let p = plan.rung_params(it.rung);
                    let (rate, shape) = piece_encode(&p, &plan.ladder_chunk(it.chunk, it.rung))?;
                    let r = encode_counted(
                        input,
                        &file(it),
                        &p,
                        span,
                        shape,
                        cancel,
                        &mut |pc| {
                            let _ = tx.send((span.index, pc));
                        },
                        &mut |_| rate,
                    );
                    let _ = tx.send((span.index, 100.0));
                    r.map(|(o, attempts)| (o, attempts, started.elapsed().as_secs_f64()))
                })
            })
        });
        let mut done = vec![0.0f32; items.len()];
        for (i, pc) in rx {
            done[i] = pc;
            let f: f64 = items
                .iter()
                .map(|it| weight(it) * done[it.span.index] as f64 / 100.0)
                .sum::<f64>()
                / total;
            // No frame count across the pieces: no speed; the ETA from the whole job's share.
            on_progress(Progress::timed(
                from + (f * (95.0 - from as f64)) as f32,
                0,
                started.elapsed().as_secs_f64(),
            ));
        }
        encodes
            .join()
            .unwrap_or_else(|_| Err(MediaError::Encode("a chunk's encode panicked".into())))
    })?;
    let entries = items
        .iter()
        .zip(&encoded)
        .map(|(it, (o, attempts, secs))| {
            let s = &plan.spans[it.chunk];
            ChunkEntry {
                index: it.chunk as u32,
                start_s: s.start_s,
                frames: s.frames,
                on_keyframe: s.on_keyframe,
                at_scene: false,
                bytes: o.video_bytes,
                attempts: *attempts,
                secs: (secs * 100.0).round() / 100.0,
                kbps: None,
                estimate_bytes: None,
                node: None,
                rung: Some(it.rung as u32),
            }
        })
        .collect();
    let encoded = Encoded {
        encoder: encoded
            .first()
            .map(|(o, ..)| o.encoder)
            .unwrap_or("")
            .into(),
        files: items.iter().map(file).collect(),
        chunks: ChunksReport {
            chunk_secs: target_s,
            auto: false,
            total: items.len() as u32,
            done: items.len() as u32,
            slots: slots as u32,
            scene_changes: None,
            estimate_secs: None,
            chunks: entries,
        },
    };
    on_progress(Progress::at(95.0));
    let outcome = finish(input, &plan, encoded, out_dir, scratch, cancel)?;
    on_progress(Progress {
        eta_s: Some(0.0),
        ..Progress::at(100.0)
    });
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, fps: f64) -> FrameIndex {
        FrameIndex {
            frames: (0..n).map(|i| (i as f64 / fps, i == 0)).collect(),
            origin_s: 0.0,
            frame_rate: None,
        }
    }

    #[test]
    fn chunks_are_whole_segments_and_no_sliver_is_left() {
        // 61 s at 25 fps, 4 s segments (100 frames), chunks of ~10 s: 2.5 segments, rounded
        // to 3; the last 13 s stay one chunk.
        let spans = cut(&frames(1525, 25.0), 100, 10.0, 25.0);
        let lens: Vec<u64> = spans.iter().map(|s| s.frames).collect();
        assert_eq!(lens, [300, 300, 300, 300, 325]);
        assert!(spans
            .iter()
            .all(|s| ((s.start_s * 25.0).round() as u64).is_multiple_of(100)));
        assert_eq!(spans.iter().map(|s| s.frames).sum::<u64>(), 1525);
        for w in spans.windows(2) {
            assert_eq!(w[0].end_s, w[1].start_s);
        }
        // A chunk shorter than a segment is asked for: one segment each.
        let spans = cut(&frames(500, 25.0), 100, 1.0, 25.0);
        assert_eq!(spans.len(), 5);
        // A title shorter than a chunk and a half is one chunk.
        assert_eq!(cut(&frames(440, 25.0), 100, 12.0, 25.0).len(), 1);
    }
}
