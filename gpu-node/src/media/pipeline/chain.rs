//! The filter chain of a pass, as FFmpeg's filter-graph syntax: scale (on the GPU where the
//! frames are), rotate, pixel format.

use rsmpeg::ffi;

use crate::media::geometry::Geometry;

pub(crate) fn pix_fmt_name(f: i32) -> String {
    // SAFETY: av_get_pix_fmt_name takes any value and returns NULL or a static string.
    let p = unsafe { ffi::av_get_pix_fmt_name(f) };
    if p.is_null() {
        "yuv420p".into()
    } else {
        // SAFETY: `p` is non-NULL and a static NUL-terminated string from FFmpeg.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The filter chain from decoded frames of `src_w`×`src_h` (format `fmt`, `sw` behind CUDA
/// frames) to the planned geometry and pixel format.
pub(crate) fn video_chain(
    src_w: i32,
    src_h: i32,
    sar: ffi::AVRational,
    fmt: i32,
    sw: Option<i32>,
    geometry: &Geometry,
    target: i32,
) -> String {
    let (sw_w, sh_h) = geometry.scaled_size();
    let square = sar.num <= 0 || sar.num == sar.den;
    let resize = !(src_w == sw_w as i32 && src_h == sh_h as i32 && square);
    let mut parts: Vec<String> = Vec::new();
    let on_gpu = fmt == ffi::AVPixelFormat_AV_PIX_FMT_CUDA;
    let mut resized = false;
    if on_gpu {
        // Scale where the frames are, then bring the smaller frames to system memory once.
        if resize && geometry.rotation == 0 {
            parts.push(format!("scale_cuda={sw_w}:{sh_h}"));
            resized = true;
        }
        parts.push("hwdownload".into());
        parts.push(format!(
            "format={}",
            pix_fmt_name(sw.unwrap_or(ffi::AVPixelFormat_AV_PIX_FMT_NV12))
        ));
    }
    if resize && !resized {
        parts.push(format!("scale={sw_w}:{sh_h}:flags=bicubic"));
    }
    match geometry.rotation {
        90 => parts.push("transpose=clock".into()),
        180 => parts.push("hflip,vflip".into()),
        270 => parts.push("transpose=cclock".into()),
        _ => {}
    }
    parts.push(format!("format={}", pix_fmt_name(target)));
    parts.push("setsar=1".into());
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_scale_rotate_and_convert_only_what_is_needed() {
        let sq = ffi::AVRational { num: 1, den: 1 };
        let yuv = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P;
        let p10 = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P10LE;
        let cuda = ffi::AVPixelFormat_AV_PIX_FMT_CUDA;
        let g = |w, h, r| Geometry {
            width: w,
            height: h,
            rotation: r,
        };
        let cases = [
            (
                (640, 272, yuv, None),
                g(640, 272, 0),
                yuv,
                "format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, yuv, None),
                g(640, 360, 0),
                yuv,
                "scale=640:360:flags=bicubic,format=yuv420p,setsar=1",
            ),
            (
                (1920, 1080, p10, None),
                g(720, 1280, 90),
                yuv,
                "scale=1280:720:flags=bicubic,transpose=clock,format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, cuda, Some(ffi::AVPixelFormat_AV_PIX_FMT_NV12)),
                g(640, 360, 0),
                yuv,
                "scale_cuda=640:360,hwdownload,format=nv12,format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, cuda, Some(ffi::AVPixelFormat_AV_PIX_FMT_NV12)),
                g(360, 640, 270),
                yuv,
                "hwdownload,format=nv12,scale=640:360:flags=bicubic,transpose=cclock,format=yuv420p,setsar=1",
            ),
        ];
        for ((w, h, fmt, sw), geo, target, want) in cases {
            assert_eq!(video_chain(w, h, sq, fmt, sw, &geo, target), want);
        }
    }
}
