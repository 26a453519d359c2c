//! The audio side of a transcode: the first audio track copied when the container can hold
//! it, else re-encoded (AAC for MP4/MKV, Opus for WebM) through a resampling filter.

use std::ffi::CString;

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodec, AVCodecContext, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::UnsafeDerefMut;

use super::error::describe;
use super::filter::{FilterGraph, Pulled};
use super::pipeline::{copy_stream, encode_and_mux, mux_packet};
use super::MediaError;

/// What happens to the audio.
pub(crate) enum AudioTrack {
    /// Packets copied as they are.
    Copy {
        in_index: usize,
        out_index: usize,
        in_tb: ffi::AVRational,
    },
    /// Decoded, resampled and encoded again.
    Encode(Box<Reencode>),
}

pub(crate) struct Reencode {
    in_index: usize,
    out_index: usize,
    kind: &'static str,
    dec: AVCodecContext,
    enc: AVCodecContext,
    graph: Option<FilterGraph>,
    /// `aformat` target, fixed when the encoder was opened.
    target: String,
    in_tb: ffi::AVRational,
}

impl AudioTrack {
    /// `copied`, `aac` or `opus`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Copy { .. } => "copied",
            Self::Encode(r) => r.kind,
        }
    }

    pub fn in_index(&self) -> usize {
        match self {
            Self::Copy { in_index, .. } => *in_index,
            Self::Encode(r) => r.in_index,
        }
    }
}

/// Audio re-encoded smaller than it came: a `size` job's audio shrunk so the picture keeps its
/// share of the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shrink {
    pub bps: u32,
    /// 1 or 2 (a source with fewer keeps its own).
    pub channels: u32,
}

impl Shrink {
    /// What a job's report says of it, against the source's track (`kind`: what was written).
    pub(crate) fn report(
        &self,
        source: Option<kiln_protocol::video::SourceAudio>,
        kind: &str,
    ) -> Option<kiln_protocol::AudioShrink> {
        let source = source?;
        Some(kiln_protocol::AudioShrink {
            source_kbps: (source.bps / 100.0).round() / 10.0,
            kbps: self.bps / 1000,
            channels: self.channels.min(source.channels),
            codec: kind.to_string(),
        })
    }
}

/// Add the audio stream for input stream `ai` to `octx`: copied when `container` can hold the
/// codec and `shrink` is `None`, re-encoded otherwise.
pub(crate) fn add_track(
    ictx: &AVFormatContextInput,
    ai: usize,
    octx: &mut AVFormatContextOutput,
    container: Container,
    shrink: Option<Shrink>,
) -> Result<AudioTrack, MediaError> {
    add_track_with(ictx, ai, octx, container, false, shrink)
}

/// [`add_track`], or with `opus` Opus whatever the container: copied when the source is Opus,
/// encoded to it otherwise (a ladder's audio for AV1/WebM-style players).
pub(crate) fn add_track_with(
    ictx: &AVFormatContextInput,
    ai: usize,
    octx: &mut AVFormatContextOutput,
    container: Container,
    opus: bool,
    shrink: Option<Shrink>,
) -> Result<AudioTrack, MediaError> {
    let in_stream = ictx.streams().get(ai).expect("stream index from FFmpeg");
    let in_par = in_stream.codecpar();
    let in_tb = in_stream.time_base;
    let fits = if opus {
        in_par.codec_id == ffi::AVCodecID_AV_CODEC_ID_OPUS
    } else {
        // SAFETY: the output format is live for `octx`'s lifetime; the call only reads it.
        let answer = unsafe {
            ffi::avformat_query_codec(
                octx.oformat().as_ptr(),
                in_par.codec_id,
                ffi::FF_COMPLIANCE_NORMAL as i32,
            )
        };
        answer == 1
    };
    if fits && shrink.is_none() {
        return Ok(AudioTrack::Copy {
            in_index: ai,
            out_index: copy_stream(octx, container, &in_par, in_tb),
            in_tb,
        });
    }

    let decoder = AVCodec::find_decoder(in_par.codec_id).ok_or_else(|| {
        MediaError::Decode("no decoder for the audio track in this FFmpeg build".into())
    })?;
    let mut dec = AVCodecContext::new(&decoder);
    dec.apply_codecpar(&in_par)
        .map_err(|e| MediaError::Decode(describe("audio decoder parameters", &e)))?;
    // SAFETY: the context is allocated and not yet opened; pkt_timebase is a plain field read on
    // open.
    unsafe { dec.deref_mut().pkt_timebase = in_tb };
    dec.open(None)
        .map_err(|e| MediaError::Decode(describe("open audio decoder", &e)))?;

    let (kind, enc_name): (&'static str, &std::ffi::CStr) = match container {
        _ if opus => ("opus", c"libopus"),
        Container::Webm => ("opus", c"libopus"),
        Container::Mp4 | Container::Mkv => ("aac", c"aac"),
    };
    let encoder = AVCodec::find_encoder_by_name(enc_name).ok_or_else(|| {
        MediaError::UnsupportedCodec(format!(
            "{} is not in this FFmpeg build",
            enc_name.to_string_lossy()
        ))
    })?;
    let channels = dec.ch_layout.nb_channels.max(1);
    // A source that gives only a channel count gets the usual layout for that count.
    // SAFETY: AVChannelLayout is plain data; all-zero is its empty (unspecified) state.
    let mut src_layout: ffi::AVChannelLayout = unsafe { std::mem::zeroed() };
    // SAFETY: `src_layout` is a zeroed layout to fill; `dec.ch_layout` is the opened decoder's own
    // layout, only read.
    unsafe {
        if dec.ch_layout.order == ffi::AVChannelOrder_AV_CHANNEL_ORDER_UNSPEC {
            ffi::av_channel_layout_default(&mut src_layout, channels);
        } else {
            ffi::av_channel_layout_copy(&mut src_layout, &dec.ch_layout);
        }
    }
    // AAC keeps up to 5.1 where its encoder takes the layout; Opus gets stereo (its surround
    // mapping needs Vorbis channel order, which most sources do not have).
    let keep_layout = kind == "aac"
        && channels <= 6
        && shrink.is_none()
        && encoder_takes_layout(&encoder, &src_layout);
    let channels = match shrink {
        Some(s) => channels.min(s.channels.clamp(1, 2) as i32),
        None => channels,
    };
    let layout_name = if keep_layout {
        layout_description(&src_layout)
    } else if channels == 1 {
        "mono".to_string()
    } else {
        "stereo".to_string()
    };
    // SAFETY: `src_layout` was initialised above and is not used after this.
    unsafe { ffi::av_channel_layout_uninit(&mut src_layout) };
    let out_channels = if keep_layout {
        channels
    } else {
        channels.min(2)
    };
    let (rate, fmt) = if kind == "opus" {
        (48_000, ffi::AVSampleFormat_AV_SAMPLE_FMT_FLT)
    } else {
        let r = dec.sample_rate;
        let ok = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
        ];
        (
            if ok.contains(&r) { r } else { 48_000 },
            ffi::AVSampleFormat_AV_SAMPLE_FMT_FLTP,
        )
    };
    let mut enc = AVCodecContext::new(&encoder);
    let layout_c = CString::new(layout_name.clone()).expect("no NUL");
    // SAFETY: the context is allocated and not yet opened; `layout_c` outlives the
    // av_channel_layout_from_string call that reads it.
    unsafe {
        let raw = enc.deref_mut();
        raw.sample_rate = rate;
        raw.sample_fmt = fmt;
        raw.time_base = ffi::AVRational { num: 1, den: rate };
        raw.bit_rate = if let Some(s) = shrink {
            s.bps as i64
        } else if kind == "opus" {
            if out_channels == 1 {
                64_000
            } else {
                128_000
            }
        } else {
            (64_000 * out_channels as i64).clamp(96_000, 384_000)
        };
        if ffi::av_channel_layout_from_string(&mut raw.ch_layout, layout_c.as_ptr()) < 0 {
            ffi::av_channel_layout_default(&mut raw.ch_layout, out_channels);
        }
    }
    if octx.oformat().flags & ffi::AVFMT_GLOBALHEADER as i32 != 0 {
        enc.set_flags(enc.flags | ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32);
    }
    enc.open(None::<AVDictionary>)
        .map_err(|e| MediaError::Encode(describe("open audio encoder", &e)))?;
    let fmt_name = sample_fmt_name(fmt)?;
    let target = format!(
        "aresample={rate},aformat=sample_fmts={fmt_name}:sample_rates={rate}:channel_layouts={layout_name}"
    );
    let mut s = octx.new_stream();
    s.set_codecpar(enc.extract_codecpar());
    s.set_time_base(enc.time_base);
    match shrink {
        Some(s) => {
            tracing::info!(kind, layout = %layout_name, rate, bps = s.bps, "re-encoding audio smaller to fit a size target")
        }
        None => {
            tracing::info!(kind, layout = %layout_name, rate, "re-encoding audio the container cannot hold")
        }
    }
    Ok(AudioTrack::Encode(Box::new(Reencode {
        in_index: ai,
        out_index: s.index as usize,
        kind,
        dec,
        enc,
        graph: None,
        target,
        in_tb,
    })))
}

/// FFmpeg's name of a sample format; an unknown one (a corrupt or exotic stream) is an error,
/// not a NULL dereference.
fn sample_fmt_name(fmt: i32) -> Result<String, MediaError> {
    // SAFETY: av_get_sample_fmt_name takes any value and returns NULL or a static string.
    let p = unsafe { ffi::av_get_sample_fmt_name(fmt) };
    if p.is_null() {
        return Err(MediaError::Decode(format!(
            "unknown audio sample format {fmt}"
        )));
    }
    // SAFETY: `p` is non-NULL and a static NUL-terminated string from FFmpeg.
    Ok(unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned())
}

fn layout_description(l: &ffi::AVChannelLayout) -> String {
    let mut buf = [0 as std::os::raw::c_char; 128];
    // SAFETY: `l` is a valid layout and `buf` a live buffer of the length passed; FFmpeg
    // NUL-terminates what it writes, read only on success.
    unsafe {
        if ffi::av_channel_layout_describe(l, buf.as_mut_ptr(), buf.len()) < 0 {
            return "stereo".into();
        }
        std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn encoder_takes_layout(codec: &AVCodec, l: &ffi::AVChannelLayout) -> bool {
    // SAFETY: `codec.ch_layouts` is NULL or FFmpeg's static table ending in a zeroed entry, walked
    // only up to it.
    unsafe {
        let mut p = codec.ch_layouts;
        if p.is_null() {
            return true;
        }
        while (*p).nb_channels != 0 {
            if ffi::av_channel_layout_compare(p, l) == 0 {
                return true;
            }
            p = p.add(1);
        }
        false
    }
}

impl AudioTrack {
    /// Take one input packet of this track.
    pub fn packet(
        &mut self,
        packet: AVPacket,
        octx: &mut AVFormatContextOutput,
    ) -> Result<(), MediaError> {
        match self {
            Self::Copy {
                out_index, in_tb, ..
            } => mux_packet(octx, packet, *in_tb, *out_index, "audio"),
            Self::Encode(r) => r.decode(Some(&packet), octx),
        }
    }

    /// Flush whatever is buffered at the end of the input.
    pub fn finish(&mut self, octx: &mut AVFormatContextOutput) -> Result<(), MediaError> {
        match self {
            Self::Copy { .. } => Ok(()),
            Self::Encode(r) => {
                r.decode(None, octx)?;
                if let Some(g) = r.graph.as_mut() {
                    g.push(None).map_err(MediaError::Encode)?;
                }
                r.drain_graph(octx)?;
                r.encode(None, octx)
            }
        }
    }
}

impl Reencode {
    fn decode(
        &mut self,
        packet: Option<&AVPacket>,
        octx: &mut AVFormatContextOutput,
    ) -> Result<(), MediaError> {
        match self.dec.send_packet(packet) {
            Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
            // A damaged audio packet is skipped, as the ffmpeg CLI does; the video decides
            // whether the source is usable.
            Err(e) => {
                tracing::debug!(error = %describe("audio decode", &e), "skipping audio packet");
                return Ok(());
            }
        }
        loop {
            let mut frame = match self.dec.receive_frame() {
                Ok(f) => f,
                Err(RsmpegError::DecoderDrainError) | Err(RsmpegError::DecoderFlushedError) => {
                    return Ok(())
                }
                Err(e) => {
                    tracing::debug!(error = %describe("audio decode", &e), "skipping audio frame");
                    return Ok(());
                }
            };
            frame.set_pts(frame.best_effort_timestamp);
            if self.graph.is_none() {
                self.graph = Some(self.build_graph(&frame)?);
            }
            self.graph
                .as_mut()
                .expect("built above")
                .push(Some(&mut frame))
                .map_err(MediaError::Encode)?;
            self.drain_graph(octx)?;
        }
    }

    fn build_graph(&self, frame: &AVFrame) -> Result<FilterGraph, MediaError> {
        let fmt_name = sample_fmt_name(frame.format)?;
        let layout = if frame.ch_layout.order == ffi::AVChannelOrder_AV_CHANNEL_ORDER_UNSPEC {
            // SAFETY: AVChannelLayout is plain data; all-zero is its empty (unspecified) state.
            let mut l: ffi::AVChannelLayout = unsafe { std::mem::zeroed() };
            // SAFETY: `l` is a zeroed layout for FFmpeg to fill.
            unsafe { ffi::av_channel_layout_default(&mut l, frame.ch_layout.nb_channels) };
            layout_description(&l)
        } else {
            layout_description(&frame.ch_layout)
        };
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout={}",
            self.in_tb.num, self.in_tb.den, frame.sample_rate, fmt_name, layout
        );
        let frame_size = if self.enc.frame_size > 0 {
            Some(self.enc.frame_size as u32)
        } else {
            None
        };
        FilterGraph::audio(&args, &self.target, frame_size).map_err(MediaError::Encode)
    }

    fn drain_graph(&mut self, octx: &mut AVFormatContextOutput) -> Result<(), MediaError> {
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        let sink_tb = graph.sink_time_base();
        let mut frames = Vec::new();
        while let Pulled::Frame(mut f) = graph.pull().map_err(MediaError::Encode)? {
            if f.pts != ffi::AV_NOPTS_VALUE {
                // SAFETY: av_rescale_q is pure arithmetic on its arguments.
                let pts = unsafe { ffi::av_rescale_q(f.pts, sink_tb, self.enc.time_base) };
                f.set_pts(pts);
            }
            frames.push(f);
        }
        for f in frames {
            self.encode(Some(&f), octx)?;
        }
        Ok(())
    }

    fn encode(
        &mut self,
        frame: Option<&AVFrame>,
        octx: &mut AVFormatContextOutput,
    ) -> Result<(), MediaError> {
        encode_and_mux(&mut self.enc, frame, octx, self.out_index, "audio", None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sample_formats_are_errors() {
        assert_eq!(
            sample_fmt_name(ffi::AVSampleFormat_AV_SAMPLE_FMT_FLTP).unwrap(),
            "fltp"
        );
        // FFmpeg answers NULL for these; the name used to be read through it unchecked.
        for bad in [-1, 9999] {
            assert!(matches!(sample_fmt_name(bad), Err(MediaError::Decode(_))));
        }
    }
}
