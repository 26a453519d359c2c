//! Decoded frames for measuring: a reader that yields every frame of a file's video stream in
//! presentation order, converted to one size and pixel format, and a lossless writer for the
//! sample clips a target-quality search encodes.

use std::collections::VecDeque;
use std::ffi::CString;
use std::path::Path;

use rsmpeg::avcodec::{AVCodec, AVCodecContext};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::AVFrame;
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::swscale::SwsContext;
use rsmpeg::UnsafeDerefMut;

use crate::media::error::describe;
use crate::media::{path_cstring, MediaError};

/// What a reader knows about its stream before decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    /// Bits per sample of the source's pixel format (8, 10, 12).
    pub bit_depth: u32,
    /// Frames per second (guessed from the container where the stream does not say).
    pub fps: f64,
    pub duration_s: f64,
}

/// 4:2:0 at 8 bits, or at 10 bits (little-endian 16-bit words) for deeper sources.
pub fn pix_fmt_for_depth(depth: u32) -> (ffi::AVPixelFormat, u32) {
    if depth > 8 {
        (ffi::AVPixelFormat_AV_PIX_FMT_YUV420P10LE, 10)
    } else {
        (ffi::AVPixelFormat_AV_PIX_FMT_YUV420P, 8)
    }
}

/// Yields the video frames of a file, converted to `width`×`height` in `pix_fmt`.
pub struct FrameReader {
    ictx: AVFormatContextInput,
    dec: AVCodecContext,
    index: usize,
    time_base: ffi::AVRational,
    start: i64,
    info: StreamInfo,
    out: (i32, i32, ffi::AVPixelFormat),
    sws: Option<(SwsContext, (i32, i32, i32))>,
    ready: VecDeque<AVFrame>,
    sent_eof: bool,
    done: bool,
}

impl FrameReader {
    /// Open `path`; frames come out at the stream's own size in 4:2:0 of its depth until
    /// [`FrameReader::convert_to`] says otherwise.
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        crate::media::init_ffmpeg_logging();
        let url = path_cstring(path)?;
        let ictx = AVFormatContextInput::open(&url, None, &mut None)
            .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
        let (index, decoder) = ictx
            .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
            .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
            .ok_or(MediaError::NoVideoStream)?;
        let (dec, info, start, time_base) = {
            let stream = ictx.streams().get(index).expect("index from FFmpeg");
            let par = stream.codecpar();
            let mut dec = AVCodecContext::new(&decoder);
            dec.apply_codecpar(&par)
                .map_err(|e| MediaError::InvalidMedia(describe("decoder parameters", &e)))?;
            // SAFETY: the context is allocated and not yet opened; these are plain fields FFmpeg
            // reads on open.
            unsafe {
                let raw = dec.deref_mut();
                raw.pkt_timebase = stream.time_base;
                crate::media::bound_decoder(raw);
            }
            dec.open(None)
                .map_err(|e| MediaError::Decode(describe("open decoder", &e)))?;
            // SAFETY: av_pix_fmt_desc_get returns NULL or a pointer to a static descriptor, checked
            // before it is read.
            let bit_depth = unsafe {
                let d = ffi::av_pix_fmt_desc_get(par.format);
                if d.is_null() {
                    8
                } else {
                    (*d).comp[0].depth as u32
                }
            };
            let fps = stream
                .guess_framerate()
                .filter(|r| r.num > 0 && r.den > 0)
                .map(|r| r.num as f64 / r.den as f64)
                .unwrap_or(25.0);
            let info = StreamInfo {
                width: par.width.max(1) as u32,
                height: par.height.max(1) as u32,
                bit_depth,
                fps,
                duration_s: crate::media::container_duration_s(&ictx),
            };
            let start = if stream.start_time != ffi::AV_NOPTS_VALUE {
                stream.start_time
            } else {
                0
            };
            let time_base = stream.time_base;
            (dec, info, start, time_base)
        };
        let bit_depth = info.bit_depth;
        let (fmt, _) = pix_fmt_for_depth(bit_depth);
        Ok(Self {
            out: (info.width as i32, info.height as i32, fmt),
            ictx,
            dec,
            index,
            time_base,
            start,
            info,
            sws: None,
            ready: VecDeque::new(),
            sent_eof: false,
            done: false,
        })
    }

    /// The stream as opened.
    pub fn info(&self) -> StreamInfo {
        self.info
    }

    /// Convert every frame to `width`×`height` in `pix_fmt` (bicubic where the size changes).
    pub fn convert_to(&mut self, width: u32, height: u32, pix_fmt: ffi::AVPixelFormat) {
        self.out = (width as i32, height as i32, pix_fmt);
        self.sws = None;
    }

    /// Position on the last keyframe at or before `seconds`; frames before it are then dropped
    /// by [`FrameReader::next_from`].
    pub fn seek(&mut self, seconds: f64) -> Result<(), MediaError> {
        let tb = self.time_base;
        let ts = self.start + (seconds * tb.den as f64 / tb.num as f64) as i64;
        // SAFETY: a valid open input; seeking backwards to the keyframe before `ts`.
        let rc = unsafe {
            ffi::av_seek_frame(
                self.ictx.as_mut_ptr(),
                self.index as i32,
                ts,
                ffi::AVSEEK_FLAG_BACKWARD as i32,
            )
        };
        if rc < 0 {
            return Err(MediaError::Decode(format!(
                "seek to {seconds:.2} s failed: {}",
                crate::media::av_error_text(rc)
            )));
        }
        // SAFETY: drop what the decoder holds from before the seek.
        unsafe { ffi::avcodec_flush_buffers(self.dec.as_mut_ptr()) };
        self.ready.clear();
        self.sent_eof = false;
        self.done = false;
        Ok(())
    }

    /// The next frame whose time is at or after `seconds` (after a [`FrameReader::seek`]).
    pub fn next_from(&mut self, seconds: f64) -> Result<Option<(f64, AVFrame)>, MediaError> {
        loop {
            match self.next_timed()? {
                Some((t, f)) if t + 1e-6 >= seconds => return Ok(Some((t, f))),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next frame with its time in seconds from the stream's start.
    pub fn next_frame_timed(&mut self) -> Result<Option<(f64, AVFrame)>, MediaError> {
        self.next_timed()
    }

    /// The next frame, converted; `None` at the end of the stream.
    pub fn next_frame(&mut self) -> Result<Option<AVFrame>, MediaError> {
        Ok(self.next_timed()?.map(|(_, f)| f))
    }

    fn next_timed(&mut self) -> Result<Option<(f64, AVFrame)>, MediaError> {
        let Some(frame) = self.decoded()? else {
            return Ok(None);
        };
        let pts = match frame.best_effort_timestamp {
            ffi::AV_NOPTS_VALUE => 0,
            p => p - self.start,
        };
        let t = pts as f64 * self.time_base.num as f64 / self.time_base.den as f64;
        Ok(Some((t, self.convert(frame)?)))
    }

    fn decoded(&mut self) -> Result<Option<AVFrame>, MediaError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if self.done {
                return Ok(None);
            }
            match self.dec.receive_frame() {
                Ok(f) => return Ok(Some(f)),
                Err(RsmpegError::DecoderDrainError) => {}
                Err(RsmpegError::DecoderFlushedError) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
            }
            if self.sent_eof {
                continue;
            }
            let packet = loop {
                match self.ictx.read_packet() {
                    Ok(Some(p)) if p.stream_index as usize == self.index => break Some(p),
                    Ok(Some(_)) => continue,
                    Ok(None) => break None,
                    Err(e) => return Err(MediaError::Decode(describe("read packet", &e))),
                }
            };
            if packet.is_none() {
                self.sent_eof = true;
            }
            match self.dec.send_packet(packet.as_ref()) {
                Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
                Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
            }
        }
    }

    fn convert(&mut self, frame: AVFrame) -> Result<AVFrame, MediaError> {
        let (w, h, fmt) = self.out;
        if frame.width == w && frame.height == h && frame.format == fmt {
            return Ok(frame);
        }
        let key = (frame.width, frame.height, frame.format);
        if self.sws.as_ref().map(|(_, k)| *k) != Some(key) {
            let sws = SwsContext::get_context(
                frame.width,
                frame.height,
                frame.format,
                w,
                h,
                fmt,
                ffi::SWS_BICUBIC | ffi::SWS_ACCURATE_RND | ffi::SWS_FULL_CHR_H_INT,
            )
            .ok_or_else(|| {
                MediaError::Decode(format!(
                    "cannot convert {}x{} format {} frames",
                    frame.width, frame.height, frame.format
                ))
            })?;
            self.sws = Some((sws, key));
        }
        let mut out = AVFrame::new();
        out.set_width(w);
        out.set_height(h);
        out.set_format(fmt);
        out.alloc_buffer()
            .map_err(|e| MediaError::Decode(describe("frame buffer", &e)))?;
        let (sws, _) = self.sws.as_mut().expect("built above");
        sws.scale_frame(&frame, 0, frame.height, &mut out)
            .map_err(|e| MediaError::Decode(describe("convert frame", &e)))?;
        Ok(out)
    }
}

/// Writes frames losslessly (FFV1 in Matroska) at a constant rate: a sample clip that decodes
/// to exactly the frames that went in.
pub struct FrameWriter {
    octx: AVFormatContextOutput,
    enc: AVCodecContext,
    next_pts: i64,
}

impl FrameWriter {
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        pix_fmt: ffi::AVPixelFormat,
        fps: f64,
    ) -> Result<Self, MediaError> {
        let url = path_cstring(path)?;
        let codec = AVCodec::find_encoder_by_name(&CString::new("ffv1").expect("static"))
            .ok_or_else(|| MediaError::UnsupportedCodec("ffv1 is not in this FFmpeg".into()))?;
        let mut enc = AVCodecContext::new(&codec);
        enc.set_width(width as i32);
        enc.set_height(height as i32);
        enc.set_pix_fmt(pix_fmt);
        // SAFETY: pure arithmetic.
        let rate = unsafe { ffi::av_d2q(fps, 100_000) };
        enc.set_time_base(ffi::AVRational {
            num: rate.den,
            den: rate.num,
        });
        enc.set_framerate(rate);
        let mut octx = AVFormatContextOutput::create(&url, None)
            .map_err(|e| MediaError::Io(describe("create sample", &e)))?;
        if octx.oformat().flags & ffi::AVFMT_GLOBALHEADER as i32 != 0 {
            enc.set_flags(enc.flags | ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32);
        }
        // SAFETY: the encoder context is allocated and not yet opened; thread_count is a plain
        // field read on open.
        unsafe { enc.deref_mut().thread_count = 0 };
        enc.open(None)
            .map_err(|e| MediaError::UnsupportedCodec(describe("open ffv1", &e)))?;
        {
            let mut s = octx.new_stream();
            s.set_codecpar(enc.extract_codecpar());
            s.set_time_base(enc.time_base);
        }
        octx.write_header(&mut None)
            .map_err(|e| MediaError::Encode(describe("write sample header", &e)))?;
        Ok(Self {
            octx,
            enc,
            next_pts: 0,
        })
    }

    pub fn write(&mut self, frame: &mut AVFrame) -> Result<(), MediaError> {
        frame.set_pts(self.next_pts);
        self.next_pts += 1;
        // Encoders read the picture type as a hint; the source's would force odd keyframes.
        frame.set_pict_type(ffi::AVPictureType_AV_PICTURE_TYPE_NONE);
        crate::media::pipeline::encode_and_mux(
            &mut self.enc,
            Some(frame),
            &mut self.octx,
            0,
            "sample",
            None,
        )?;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.next_pts as u64
    }

    pub fn finish(mut self) -> Result<(), MediaError> {
        crate::media::pipeline::encode_and_mux(
            &mut self.enc,
            None,
            &mut self.octx,
            0,
            "sample",
            None,
        )?;
        self.octx
            .write_trailer()
            .map_err(|e| MediaError::Encode(describe("write sample trailer", &e)))
    }
}
