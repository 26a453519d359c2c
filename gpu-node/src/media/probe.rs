//! Probing: what a media file holds, read from its headers.

use std::path::Path;

use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::ffi;

use super::error::describe;
use super::{container_duration_s, display_width, init_ffmpeg_logging, path_cstring, MediaError};

/// What a probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Container format name(s) as FFmpeg reports them (`mov,mp4,m4a,3gp,3g2,mj2`).
    pub format: String,
    /// Duration in seconds (0 when unknown).
    pub duration_s: f64,
    /// Video codec name (`h264`).
    pub video_codec: String,
    /// Coded width and height.
    pub width: u32,
    pub height: u32,
    /// Width after the sample aspect ratio is applied (what a player shows).
    pub display_width: u32,
    /// Whether there is an audio stream.
    pub has_audio: bool,
    /// Clockwise rotation a player applies from the display matrix: 0, 90, 180 or 270.
    pub rotation: i32,
    /// Bits per luma sample (8, 10, 12).
    pub bit_depth: u32,
    /// The first audio stream's codec, when there is one.
    pub audio_codec: Option<String>,
    /// The first audio stream's bitrate in bits/s when the container says (0 otherwise).
    pub audio_bitrate: u64,
    /// The first audio stream's channel count (0 without audio).
    pub audio_channels: u32,
    /// Streams of every kind in the container.
    pub streams: u32,
}

impl MediaInfo {
    /// What the source limits look at.
    pub fn shape(&self) -> kiln_protocol::limits::SourceShape {
        kiln_protocol::limits::SourceShape {
            width: self.width,
            height: self.height,
            duration_s: self.duration_s,
            streams: self.streams,
        }
    }

    /// Width × height as a player shows it: sample aspect and rotation applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 != 0 {
            (self.height, self.display_width)
        } else {
            (self.display_width, self.height)
        }
    }

    /// The audio track as a `size` plan sees it.
    pub fn source_audio(&self) -> Option<kiln_protocol::video::SourceAudio> {
        self.has_audio.then(|| kiln_protocol::video::SourceAudio {
            bps: match self.audio_bitrate {
                0 => kiln_protocol::video::ASSUMED_AUDIO_BPS,
                b => b as f64,
            },
            channels: self.audio_channels.max(1),
        })
    }
}

/// The clockwise rotation of a stream's display matrix, snapped to 0/90/180/270 as the
/// `ffmpeg` CLI does for autorotation.
pub(crate) fn stream_rotation(stream: &ffi::AVStream) -> i32 {
    let mut size: usize = 0;
    // SAFETY: reads the stream's side data; the matrix is nine i32 when present.
    let theta = unsafe {
        let data = ffi::av_stream_get_side_data(
            stream,
            ffi::AVPacketSideDataType_AV_PKT_DATA_DISPLAYMATRIX,
            &mut size,
        );
        if data.is_null() || size < 36 {
            return 0;
        }
        -ffi::av_display_rotation_get(data as *const i32)
    };
    if !theta.is_finite() {
        return 0;
    }
    ((theta / 90.0).round() as i32 * 90).rem_euclid(360)
}

/// Bits per sample of a pixel format's first component (8 when unknown).
pub(crate) fn bit_depth(format: i32) -> u32 {
    // SAFETY: av_pix_fmt_desc_get returns NULL for unknown formats.
    let desc = unsafe { ffi::av_pix_fmt_desc_get(format) };
    if desc.is_null() {
        8
    } else {
        // SAFETY: `desc` is non-NULL and points at FFmpeg's static pixel format descriptor.
        unsafe { (*desc).comp[0].depth as u32 }
    }
}

/// Index of the first audio stream in file order: "keep the first track" by default.
pub(crate) fn first_audio_stream(input: &AVFormatContextInput) -> Option<usize> {
    input
        .streams()
        .into_iter()
        .position(|s| s.codecpar().codec_type == ffi::AVMediaType_AVMEDIA_TYPE_AUDIO)
}

/// Read a file's headers. Fails with [`MediaError::InvalidMedia`] when FFmpeg cannot open it and
/// [`MediaError::NoVideoStream`] when it holds no video.
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    init_ffmpeg_logging();
    let url = path_cstring(path)?;
    let input = AVFormatContextInput::open(&url, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open", &e)))?;
    let (index, decoder) = input
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let audio = first_audio_stream(&input).map(|i| {
        let stream = input.streams().get(i).expect("index from the list");
        let par = stream.codecpar();
        // SAFETY: avcodec_get_name returns a static string for every id.
        let name = unsafe { std::ffi::CStr::from_ptr(ffi::avcodec_get_name(par.codec_id)) }
            .to_string_lossy()
            .into_owned();
        (
            name,
            par.bit_rate.max(0) as u64,
            par.ch_layout.nb_channels.max(0) as u32,
        )
    });
    let stream = input
        .streams()
        .get(index)
        .ok_or(MediaError::NoVideoStream)?;
    let par = stream.codecpar();
    if par.width <= 0 || par.height <= 0 {
        return Err(MediaError::InvalidMedia(
            "the video stream has no picture size".into(),
        ));
    }
    let (width, height) = (par.width as u32, par.height as u32);
    let display_width = display_width(par.width, par.sample_aspect_ratio);
    let rotation = stream_rotation(&stream);
    let bit_depth = bit_depth(par.format);
    let duration_s = container_duration_s(&input);
    let format = {
        let iformat = input.iformat();
        // SAFETY: every demuxer has a static, NUL-terminated short name.
        unsafe { std::ffi::CStr::from_ptr(iformat.name) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(MediaInfo {
        format,
        duration_s,
        video_codec: decoder.name().to_string_lossy().into_owned(),
        width,
        height,
        display_width,
        has_audio: audio.is_some(),
        rotation,
        bit_depth,
        audio_bitrate: audio.as_ref().map(|a| a.1).unwrap_or(0),
        audio_channels: audio.as_ref().map(|a| a.2).unwrap_or(0),
        audio_codec: audio.map(|a| a.0),
        streams: input.nb_streams,
    })
}
