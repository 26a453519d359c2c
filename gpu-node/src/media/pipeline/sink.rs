//! The encode side of a pass: video encoder, audio track and muxer, on an encoder thread, so
//! decoding and filtering the next frames overlaps encoding these.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodec, AVCodecContext, AVCodecParameters, AVPacket};
use rsmpeg::avformat::AVFormatContextOutput;
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::UnsafeDerefMut;

use super::{Color, Msg, PassSpec};
use crate::media::audio;
use crate::media::error::describe;
use crate::media::MediaError;

/// Open the encoder before the first frame (its size and format are planned) and add its
/// stream to `octx`; returns the encoder and the stream's index.
pub(crate) fn open_encoder(
    spec: &PassSpec<'_>,
    in_tb: ffi::AVRational,
    frame_rate: Option<ffi::AVRational>,
    color: Color,
    octx: &mut AVFormatContextOutput,
) -> Result<(AVCodecContext, usize), MediaError> {
    let encoder_c = CString::new(spec.encoder).expect("static name");
    let encoder = AVCodec::find_encoder_by_name(&encoder_c).ok_or_else(|| {
        MediaError::UnsupportedCodec(format!("{} is not in this FFmpeg build", spec.encoder))
    })?;
    let mut enc = AVCodecContext::new(&encoder);
    enc.set_width(spec.geometry.width as i32);
    enc.set_height(spec.geometry.height as i32);
    enc.set_pix_fmt(spec.pix_fmt);
    // Encode in the source stream's time base, so variable frame timing passes through as is.
    enc.set_time_base(in_tb);
    if let Some(fr) = frame_rate {
        enc.set_framerate(fr);
    }
    enc.set_sample_aspect_ratio(spec.sar);
    // SAFETY: the context is allocated and not yet opened; these are plain fields FFmpeg reads on
    // open.
    unsafe {
        let raw = enc.deref_mut();
        raw.bit_rate = spec.settings.bit_rate;
        raw.rc_max_rate = spec.settings.max_rate;
        raw.rc_buffer_size = spec.settings.buffer_size as i32;
        if spec.settings.gop_size > 0 {
            raw.gop_size = spec.settings.gop_size;
            raw.keyint_min = spec.settings.gop_size;
        }
        raw.color_range = color.0;
        raw.color_primaries = color.1;
        raw.color_trc = color.2;
        raw.colorspace = color.3;
    }
    if octx.oformat().flags & ffi::AVFMT_GLOBALHEADER as i32 != 0 {
        enc.set_flags(enc.flags | ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32);
    }
    let mut opts: Option<AVDictionary> = None;
    for (k, v) in &spec.settings.options {
        let (k, v) = (
            CString::new(k.as_str()).expect("no NUL"),
            CString::new(v.as_str()).map_err(|_| MediaError::Io("NUL in an option".into()))?,
        );
        opts = Some(match opts {
            None => AVDictionary::new(&k, &v, 0),
            Some(d) => d.set(&k, &v, 0),
        });
    }
    enc.open(opts).map_err(|e| {
        MediaError::UnsupportedCodec(describe(&format!("open {}", spec.encoder), &e))
    })?;

    let v_out_index = {
        let mut par = enc.extract_codecpar();
        if let Some(tag) = container_tag(par.codec_id, spec.container) {
            // SAFETY: `par` is an owned parameter set; codec_tag is a plain field.
            unsafe { par.deref_mut().codec_tag = tag };
        }
        let mut s = octx.new_stream();
        s.set_codecpar(par);
        s.set_time_base(enc.time_base);
        s.index as usize
    };
    Ok((enc, v_out_index))
}

/// The encode side: video encoder, audio track and muxer, on an encoder thread, so decoding
/// and filtering the next frames overlaps encoding these (the `ffmpeg` 5.1 CLI does both on
/// one thread), and a cancelled job need not wait for an encoder call to return.
pub(super) struct Sink {
    pub(super) enc: AVCodecContext,
    pub(super) octx: AVFormatContextOutput,
    pub(super) audio: Option<audio::AudioTrack>,
    pub(super) out_index: usize,
    pub(super) bytes: u64,
}

impl Sink {
    pub(super) fn run(
        mut self,
        rx: Receiver<Msg>,
        abandon: &AtomicBool,
    ) -> Result<u64, MediaError> {
        loop {
            match rx.recv() {
                Ok(Msg::Frame(f)) => self.encode(Some(&f), abandon)?,
                Ok(Msg::Audio(p)) => {
                    if let Some(a) = self.audio.as_mut() {
                        a.packet(p, &mut self.octx)?;
                    }
                }
                Ok(Msg::End) => {
                    self.encode(None, abandon)?;
                    if let Some(a) = self.audio.as_mut() {
                        a.finish(&mut self.octx)?;
                    }
                    self.octx
                        .write_trailer()
                        .map_err(|e| MediaError::Encode(describe("write trailer", &e)))?;
                    return Ok(self.bytes);
                }
                // The decode side stopped (an error or a cancel): no trailer, just close.
                Err(_) => return Err(MediaError::Cancelled),
            }
        }
    }

    fn encode(&mut self, frame: Option<&AVFrame>, abandon: &AtomicBool) -> Result<(), MediaError> {
        self.bytes += encode_and_mux(
            &mut self.enc,
            frame,
            &mut self.octx,
            self.out_index,
            "video",
            Some(abandon),
        )?;
        Ok(())
    }
}

/// Send a frame (or the flush signal) to `enc` and mux every packet it returns into stream
/// `out_index`; returns the bytes written. Stops with `Cancelled` once `abandon` is raised,
/// since draining a deep lookahead can take a while.
pub(crate) fn encode_and_mux(
    enc: &mut AVCodecContext,
    frame: Option<&AVFrame>,
    octx: &mut AVFormatContextOutput,
    out_index: usize,
    what: &str,
    abandon: Option<&AtomicBool>,
) -> Result<u64, MediaError> {
    match enc.send_frame(frame) {
        Ok(()) | Err(RsmpegError::EncoderFlushedError) => {}
        Err(e) => return Err(MediaError::Encode(describe(&format!("{what} encode"), &e))),
    }
    let mut bytes = 0;
    loop {
        if abandon.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(MediaError::Cancelled);
        }
        let packet = match enc.receive_packet() {
            Ok(p) => p,
            Err(RsmpegError::EncoderDrainError) | Err(RsmpegError::EncoderFlushedError) => {
                return Ok(bytes)
            }
            Err(e) => return Err(MediaError::Encode(describe(&format!("{what} encode"), &e))),
        };
        bytes += packet.size as u64;
        let mut packet = packet;
        if packet.duration <= 0 {
            // FFmpeg 5.1's encoders leave a frame's duration unset when the filter graph did;
            // without it the MP4 muxer gives the last frame none, and players (and ffprobe)
            // drop it. One frame at the stream's rate, as the `ffmpeg` CLI sets it.
            packet.set_duration(one_frame(enc.framerate, enc.time_base));
        }
        mux_packet(octx, packet, enc.time_base, out_index, what)?;
    }
}

/// One frame at `rate`, in time base `tb`; 0 when the rate is unknown.
pub(crate) fn one_frame(rate: ffi::AVRational, tb: ffi::AVRational) -> i64 {
    if rate.num <= 0 || rate.den <= 0 {
        return 0;
    }
    let period = ffi::AVRational {
        num: rate.den,
        den: rate.num,
    };
    rsmpeg::avutil::av_rescale_q(1, period, tb)
}

/// The codec tag Kiln states in `container` where the muxer's own choice will not do: `hvc1`
/// for HEVC in MP4, what Apple players require (harmless elsewhere).
fn container_tag(codec_id: ffi::AVCodecID, container: Container) -> Option<u32> {
    (codec_id == ffi::AVCodecID_AV_CODEC_ID_HEVC && container == Container::Mp4)
        .then(|| u32::from_le_bytes(*b"hvc1"))
}

/// Add a stream to `octx`, a `container` file, carrying `par` as it is, in time base `tb`;
/// returns its index. The source container's codec tag is dropped so the muxer picks its own,
/// but for [`container_tag`]'s.
pub(crate) fn copy_stream(
    octx: &mut AVFormatContextOutput,
    container: Container,
    par: &AVCodecParameters,
    tb: ffi::AVRational,
) -> usize {
    let mut own = AVCodecParameters::new();
    own.copy(par);
    let tag = container_tag(par.codec_id, container).unwrap_or(0);
    // SAFETY: `own` is an owned copy; codec_tag is a plain field.
    unsafe { own.deref_mut().codec_tag = tag };
    let mut s = octx.new_stream();
    s.set_codecpar(own);
    s.set_time_base(tb);
    s.index as usize
}

/// Write a packet in time base `from` to output stream `out_index`.
pub(crate) fn mux_packet(
    octx: &mut AVFormatContextOutput,
    mut packet: AVPacket,
    from: ffi::AVRational,
    out_index: usize,
    what: &str,
) -> Result<(), MediaError> {
    let out_tb = octx
        .streams()
        .get(out_index)
        .expect("a stream this pass created")
        .time_base;
    packet.rescale_ts(from, out_tb);
    packet.set_stream_index(out_index as i32);
    packet.set_pos(-1);
    octx.interleaved_write_frame(&mut packet)
        .map_err(|e| MediaError::Encode(describe(&format!("write {what}"), &e)))
}
