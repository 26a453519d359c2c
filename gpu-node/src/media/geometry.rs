//! Output geometry: the requested resolution applied to what a player shows (sample aspect and
//! rotation included), even dimensions, upscaling refused unless asked for.

use kiln_protocol::Resolution;

use super::probe::MediaInfo;

/// The picture a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Output width × height as displayed (rotation already applied to the pixels).
    pub width: u32,
    pub height: u32,
    /// Clockwise rotation applied to the decoded pixels: 0, 90, 180 or 270.
    pub rotation: i32,
}

impl Geometry {
    /// The size to scale decoded frames to before they are rotated.
    pub fn scaled_size(&self) -> (u32, u32) {
        if self.rotation % 180 != 0 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Round up to even: the size an `original` 4:2:0 output of an odd source gets.
fn even_up(v: u32) -> u32 {
    v + (v & 1)
}

/// Plan the output picture for `info` at `resolution`. Refuses a size larger than the source
/// on either side unless `allow_upscale`.
pub fn plan(
    info: &MediaInfo,
    resolution: Option<Resolution>,
    allow_upscale: bool,
) -> Result<Geometry, String> {
    let (dw, dh) = info.display_size();
    let (width, height) = Resolution::output_size(resolution, dw, dh);
    if resolution.is_some() && !allow_upscale && (width > even_up(dw) || height > even_up(dh)) {
        return Err(format!(
            "{width}x{height} is larger than the source's {dw}x{dh}; upscaling adds no detail, \
             so it is refused unless the request sets allow_upscale=true"
        ));
    }
    Ok(Geometry {
        width,
        height,
        rotation: info.rotation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(w: u32, h: u32, dw: u32, rotation: i32) -> MediaInfo {
        MediaInfo {
            format: "mov".into(),
            duration_s: 1.0,
            video_codec: "h264".into(),
            width: w,
            height: h,
            display_width: dw,
            has_audio: false,
            rotation,
            bit_depth: 8,
            audio_codec: None,
            audio_bitrate: 0,
            audio_channels: 0,
            streams: 1,
        }
    }

    /// (source, request, upscale allowed, expected (w, h, rotation) or refusal)
    type Case<'a> = (
        &'a MediaInfo,
        Option<Resolution>,
        bool,
        Option<(u32, u32, i32)>,
    );

    #[test]
    fn plans_follow_display_size_and_rotation() {
        let hd = info(1920, 1080, 1920, 0);
        let portrait = info(1920, 1080, 1920, 90);
        let anamorphic = info(720, 576, 1024, 0);
        let odd = info(321, 241, 321, 0);
        let h = |v| Some(Resolution::Height { height: v });
        let w = |v| Some(Resolution::Width { width: v });
        // (source, request, upscale allowed, expected (w, h, rotation) or refusal)
        let cases: Vec<Case> = vec![
            (&hd, None, false, Some((1920, 1080, 0))),
            (&hd, h(720), false, Some((1280, 720, 0))),
            (&hd, h(2160), false, None),
            (&hd, h(2160), true, Some((3840, 2160, 0))),
            (&portrait, None, false, Some((1080, 1920, 90))),
            (&portrait, h(1280), false, Some((720, 1280, 90))),
            (&portrait, w(720), false, Some((720, 1280, 90))),
            (&portrait, h(1080), false, Some((608, 1080, 90))),
            (&anamorphic, None, false, Some((1024, 576, 0))),
            (&odd, None, false, Some((322, 242, 0))),
            (&odd, w(320), false, Some((320, 240, 0))),
            (
                &hd,
                Some(Resolution::Exact {
                    width: 1280,
                    height: 1280,
                }),
                false,
                None,
            ),
        ];
        for (src, req, up, want) in cases {
            let got = plan(src, req, up)
                .ok()
                .map(|g| (g.width, g.height, g.rotation));
            assert_eq!(got, want, "{req:?} of {src:?} upscale={up}");
        }
        let g = plan(&portrait, h(1280), false).unwrap();
        assert_eq!(g.scaled_size(), (1280, 720));
    }
}
