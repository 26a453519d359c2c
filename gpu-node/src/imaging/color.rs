//! Colour management: an embedded ICC profile is converted to sRGB (what the resize's
//! linear-light maths and every browser assume), then dropped with the rest of the metadata.

use std::sync::{Arc, Mutex};

use lcms2::{DisallowCache, Flags, GlobalContext, Intent, PixelFormat, Profile, Transform};

/// A transform shareable between threads (lcms2's no-cache mode).
type SharedTransform = Transform<[u8; 4], [u8; 4], GlobalContext, DisallowCache>;

/// Profiles seen recently and what to do with them (`None`: leave the pixels alone). Photos
/// from one camera share one profile, and building a transform costs more than applying it
/// to a resized image.
const CACHED_PROFILES: usize = 8;

/// What a profile turned into: a transform, or `None` for "leave the pixels alone".
type Cached = Arc<Option<SharedTransform>>;

fn transform_for(icc: &[u8]) -> Cached {
    static CACHE: Mutex<Vec<(Vec<u8>, Cached)>> = Mutex::new(Vec::new());
    if let Some((_, t)) = CACHE
        .lock()
        .expect("profile cache")
        .iter()
        .find(|(k, _)| k == icc)
    {
        return t.clone();
    }
    let built = Arc::new(build(icc));
    let mut cache = CACHE.lock().expect("profile cache");
    if cache.len() >= CACHED_PROFILES {
        cache.remove(0);
    }
    cache.push((icc.to_vec(), built.clone()));
    built
}

/// The transform from `icc` to sRGB, or `None` for a profile that is already sRGB or that
/// lcms2 cannot use for RGB pixels (grey or CMYK profiles, damaged data); the reason is logged.
fn build(icc: &[u8]) -> Option<SharedTransform> {
    let profile = match Profile::new_icc(icc) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring an unreadable ICC profile");
            return None;
        }
    };
    let described = profile
        .info(lcms2::InfoType::Description, lcms2::Locale::none())
        .unwrap_or_default();
    if described.to_ascii_lowercase().contains("srgb") {
        return None;
    }
    match SharedTransform::new_flags_context(
        GlobalContext::new(),
        &profile,
        PixelFormat::RGBA_8,
        &Profile::new_srgb(),
        PixelFormat::RGBA_8,
        Intent::Perceptual,
        Flags::NO_CACHE,
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(error = %e, profile = %described, "ICC profile not usable for RGB");
            None
        }
    }
}

/// Convert packed RGBA8 pixels from `icc` to sRGB in place (alpha untouched). A profile that
/// is already sRGB, or unusable, leaves the pixels as they are.
pub fn to_srgb(rgba: &mut [u8], icc: &[u8]) {
    if let Some(t) = transform_for(icc).as_ref() {
        let pixels: &mut [[u8; 4]] = bytemuck::cast_slice_mut(rgba);
        t.transform_in_place(pixels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_gamut_red_is_mapped_into_srgb_and_srgb_is_untouched() {
        // Build a Display-P3-like profile: P3 primaries, sRGB transfer curve.
        let d65 = lcms2::CIExyY {
            x: 0.3127,
            y: 0.3290,
            Y: 1.0,
        };
        let p3 = lcms2::CIExyYTRIPLE {
            Red: lcms2::CIExyY {
                x: 0.680,
                y: 0.320,
                Y: 1.0,
            },
            Green: lcms2::CIExyY {
                x: 0.265,
                y: 0.690,
                Y: 1.0,
            },
            Blue: lcms2::CIExyY {
                x: 0.150,
                y: 0.060,
                Y: 1.0,
            },
        };
        let curve = lcms2::ToneCurve::new_parametric(
            4,
            &[2.4, 1.0 / 1.055, 0.055 / 1.055, 1.0 / 12.92, 0.04045],
        )
        .unwrap();
        let profile = Profile::new_rgb(&d65, &p3, &[&curve, &curve, &curve]).unwrap();
        let icc = profile.icc().unwrap();
        let mut px = vec![255u8, 0, 0, 255, 128, 128, 128, 200];
        to_srgb(&mut px, &icc);
        // P3 pure red is outside sRGB: clipped to full red, and grey stays grey.
        assert_eq!(px[0], 255);
        assert!(px[1] < 30 && px[2] < 30, "{px:?}");
        assert!((px[4] as i32 - 128).abs() <= 1 && px[4] == px[5] && px[5] == px[6]);
        assert_eq!(px[7], 200, "alpha untouched");

        let srgb_icc = Profile::new_srgb().icc().unwrap();
        let mut same = vec![10u8, 200, 30, 255];
        to_srgb(&mut same, &srgb_icc);
        assert_eq!(same, [10, 200, 30, 255]);
        let mut junk = vec![1u8, 2, 3, 4];
        to_srgb(&mut junk, b"not an icc profile");
        assert_eq!(junk, [1, 2, 3, 4]);
    }
}
