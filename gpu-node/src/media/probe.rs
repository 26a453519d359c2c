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
    let has_audio = matches!(
        input.find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_AUDIO),
        Ok(Some(_))
    );
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
        has_audio,
    })
}
