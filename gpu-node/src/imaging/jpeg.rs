//! JPEG through libjpeg-turbo's TurboJPEG API (the same library libvips uses): decode with
//! DCT-domain downscaling ("shrink-on-load": 1/2, 1/4 or 1/8 of the size for much less work)
//! and fast SIMD encode.

use std::ffi::{c_int, c_uchar, c_ulong, CStr};

use turbojpeg_sys as tj;

/// A TurboJPEG handle, destroyed on drop.
struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInit* and is destroyed once.
        unsafe { tj::tjDestroy(self.0) };
    }
}

impl Handle {
    fn error(&self) -> String {
        // SAFETY: tjGetErrorStr2 returns a static or handle-owned NUL-terminated string.
        unsafe { CStr::from_ptr(tj::tjGetErrorStr2(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Handle {
    fn decompressor() -> Result<Self, String> {
        // SAFETY: a fresh decompressor handle; null means failure.
        let h = Handle(unsafe { tj::tjInitDecompress() });
        if h.0.is_null() {
            return Err("TurboJPEG could not start".into());
        }
        Ok(h)
    }

    /// The size of a JPEG, from its header.
    fn dimensions(&self, data: &[u8]) -> Result<(u32, u32), String> {
        let (mut w, mut hgt, mut sub, mut cs): (c_int, c_int, c_int, c_int) = (0, 0, 0, 0);
        // SAFETY: data is a valid slice; the out-pointers are valid locals.
        let rc = unsafe {
            tj::tjDecompressHeader3(
                self.0,
                data.as_ptr(),
                data.len() as c_ulong,
                &mut w,
                &mut hgt,
                &mut sub,
                &mut cs,
            )
        };
        if rc != 0 || w <= 0 || hgt <= 0 {
            return Err(self.error());
        }
        Ok((w as u32, hgt as u32))
    }
}

/// The size of a JPEG, from its header.
pub fn dimensions(data: &[u8]) -> Result<(u32, u32), String> {
    Handle::decompressor()?.dimensions(data)
}

/// The largest DCT reduction 1, 2, 4 or 8 that keeps the decoded image at least `min_w`×`min_h`.
pub fn shrink_factor((w, h): (u32, u32), (min_w, min_h): (u32, u32)) -> u32 {
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| w.div_ceil(d) >= min_w && h.div_ceil(d) >= min_h)
        .unwrap_or(1)
}

/// Decode to packed RGBA8 at 1/`shrink` of the size (1, 2, 4 or 8). Returns pixels and size.
pub fn decode(data: &[u8], shrink: u32) -> Result<(Vec<u8>, u32, u32), String> {
    let handle = Handle::decompressor()?;
    let (w, h) = handle.dimensions(data)?;
    let (sw, sh) = (w.div_ceil(shrink), h.div_ceil(shrink));
    let mut out = vec![0u8; sw as usize * sh as usize * 4];
    // SAFETY: `out` holds pitch*height bytes for the scaled size TurboJPEG will produce for
    // these desired dimensions (it picks the scale factor whose result fits them exactly).
    let rc = unsafe {
        tj::tjDecompress2(
            handle.0,
            data.as_ptr(),
            data.len() as c_ulong,
            out.as_mut_ptr(),
            sw as c_int,
            (sw * 4) as c_int,
            sh as c_int,
            tj::TJPF_TJPF_RGBA,
            0,
        )
    };
    if rc != 0 {
        // Browsers show JPEGs with recoverable glitches (stray bytes between markers); a file
        // cut short is not one of them.
        // SAFETY: a valid handle.
        let warning = unsafe { tj::tjGetErrorCode(handle.0) } == tj::TJERR_TJERR_WARNING as c_int;
        let message = handle.error();
        if !warning || message.contains("Premature end") {
            return Err(message);
        }
    }
    Ok((out, sw, sh))
}

/// Encode packed RGB8 (`channels` = 3) or RGBA8 (4, alpha ignored) at `quality` 1–100, 4:2:0.
pub fn encode(
    pixels: &[u8],
    w: u32,
    h: u32,
    channels: u32,
    quality: u8,
) -> Result<Vec<u8>, String> {
    // SAFETY: a fresh compressor handle; null means failure.
    let handle = Handle(unsafe { tj::tjInitCompress() });
    if handle.0.is_null() {
        return Err("TurboJPEG could not start".into());
    }
    assert_eq!(
        pixels.len(),
        (w * h * channels) as usize,
        "pixel buffer size"
    );
    let format = if channels == 4 {
        tj::TJPF_TJPF_RGBA
    } else {
        tj::TJPF_TJPF_RGB
    };
    let mut buf: *mut c_uchar = std::ptr::null_mut();
    let mut size: c_ulong = 0;
    // SAFETY: pixels holds w*h*channels bytes; TurboJPEG allocates `buf`, freed below.
    let rc = unsafe {
        tj::tjCompress2(
            handle.0,
            pixels.as_ptr(),
            w as c_int,
            (w * channels) as c_int,
            h as c_int,
            format,
            &mut buf,
            &mut size,
            tj::TJSAMP_TJSAMP_420 as c_int,
            quality.clamp(1, 100) as c_int,
            0,
        )
    };
    let result = if rc != 0 || buf.is_null() {
        Err(handle.error())
    } else {
        // SAFETY: TurboJPEG wrote `size` bytes at `buf`.
        Ok(unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec())
    };
    if !buf.is_null() {
        // SAFETY: allocated by tjCompress2 and not used after this.
        unsafe { tj::tjFree(buf) };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_at_least_the_target() {
        assert_eq!(shrink_factor((5312, 2988), (1200, 675)), 4);
        assert_eq!(shrink_factor((5312, 2988), (1400, 788)), 2);
        assert_eq!(shrink_factor((5312, 2988), (200, 200)), 8);
        assert_eq!(shrink_factor((640, 427), (600, 400)), 1);
        assert_eq!(shrink_factor((7, 7), (1, 1)), 8);
        assert_eq!(shrink_factor((7, 7), (2, 2)), 4);
    }

    #[test]
    fn round_trip_and_shrink_on_load() {
        let (w, h) = (64u32, 48u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % w * 4) as u8, (i / w * 5) as u8, 128])
            .collect();
        let jpg = encode(&rgb, w, h, 3, 90).unwrap();
        assert_eq!(dimensions(&jpg).unwrap(), (64, 48));
        let (px, dw, dh) = decode(&jpg, 1).unwrap();
        assert_eq!((dw, dh, px.len()), (64, 48, 64 * 48 * 4));
        let (px, dw, dh) = decode(&jpg, 4).unwrap();
        assert_eq!((dw, dh, px.len()), (16, 12, 16 * 12 * 4));
        assert!(decode(&jpg[..jpg.len() / 3], 1).is_err());
        assert!(decode(b"nope", 1).is_err());
        assert!(dimensions(b"not a jpeg").is_err());
    }
}
