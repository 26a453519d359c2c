//! libvmaf 2.3 through its C API: the standard model (vmaf_v0.6.1, compiled into the library)
//! plus the `psnr` and `float_ssim` feature extractors, so one pass over the frames gives all
//! three metrics. Declarations follow `libvmaf/libvmaf.h`, `picture.h` and `model.h` of 2.3.1.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;

use super::QualityError;

#[repr(C)]
struct VmafConfiguration {
    log_level: c_int,
    n_threads: c_uint,
    n_subsample: c_uint,
    cpumask: u64,
}

#[repr(C)]
struct VmafModelConfig {
    name: *const c_char,
    flags: u64,
}

/// `VmafPicture`: planes the library allocates (aligned), which Kiln fills.
#[repr(C)]
pub struct VmafPicture {
    pix_fmt: c_int,
    bpc: c_uint,
    w: [c_uint; 3],
    h: [c_uint; 3],
    stride: [isize; 3],
    data: [*mut c_void; 3],
    ref_: *mut c_void,
}

enum VmafContextRaw {}
enum VmafModelRaw {}

const VMAF_PIX_FMT_YUV420P: c_int = 1;
const VMAF_LOG_LEVEL_NONE: c_int = 0;

extern "C" {
    fn vmaf_init(vmaf: *mut *mut VmafContextRaw, cfg: VmafConfiguration) -> c_int;
    fn vmaf_model_load(
        model: *mut *mut VmafModelRaw,
        cfg: *mut VmafModelConfig,
        version: *const c_char,
    ) -> c_int;
    fn vmaf_model_destroy(model: *mut VmafModelRaw);
    fn vmaf_use_features_from_model(vmaf: *mut VmafContextRaw, model: *mut VmafModelRaw) -> c_int;
    fn vmaf_use_feature(vmaf: *mut VmafContextRaw, name: *const c_char, opts: *mut c_void)
        -> c_int;
    fn vmaf_picture_alloc(
        pic: *mut VmafPicture,
        pix_fmt: c_int,
        bpc: c_uint,
        w: c_uint,
        h: c_uint,
    ) -> c_int;
    fn vmaf_picture_unref(pic: *mut VmafPicture) -> c_int;
    fn vmaf_read_pictures(
        vmaf: *mut VmafContextRaw,
        reference: *mut VmafPicture,
        distorted: *mut VmafPicture,
        index: c_uint,
    ) -> c_int;
    fn vmaf_score_at_index(
        vmaf: *mut VmafContextRaw,
        model: *mut VmafModelRaw,
        score: *mut f64,
        index: c_uint,
    ) -> c_int;
    fn vmaf_feature_score_at_index(
        vmaf: *mut VmafContextRaw,
        name: *const c_char,
        score: *mut f64,
        index: c_uint,
    ) -> c_int;
    fn vmaf_close(vmaf: *mut VmafContextRaw) -> c_int;
    fn vmaf_version() -> *const c_char;
}

/// The libvmaf version linked in (`2.3.1`).
pub fn version() -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(vmaf_version()) }
        .to_string_lossy()
        .into_owned()
}

/// libvmaf's own `vmaf` CLI, built beside the library this binary links
/// (deploy/setup-debian.sh): the reference Kiln's scores are checked and benchmarked against.
pub fn reference_cli() -> PathBuf {
    PathBuf::from(env!("KILN_LIBVMAF_PREFIX")).join("bin/vmaf")
}

/// Pooled means the reference CLI reports for a pair of Y4M files.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceScores {
    pub vmaf: f64,
    pub psnr_y: f64,
    pub ssim: f64,
}

/// Run the reference CLI on `reference_y4m` and `distorted_y4m` with the features Kiln computes
/// (the model's, `psnr`, `float_ssim`) on `threads` threads, its JSON log written to `json`.
pub fn reference_scores(
    reference_y4m: &Path,
    distorted_y4m: &Path,
    threads: u32,
    json: &Path,
) -> Result<ReferenceScores, String> {
    let cli = reference_cli();
    let out = Command::new(&cli)
        .arg("-r")
        .arg(reference_y4m)
        .arg("-d")
        .arg(distorted_y4m)
        .args(["--feature", "psnr", "--feature", "float_ssim", "--threads"])
        .arg(threads.to_string())
        .args(["--json", "-q", "-o"])
        .arg(json)
        .output()
        .map_err(|e| format!("{}: {e} (run deploy/setup-debian.sh)", cli.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            cli.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mean = |k: &str| {
        v["pooled_metrics"][k]["mean"]
            .as_f64()
            .ok_or_else(|| format!("no pooled {k} in the CLI's JSON"))
    };
    Ok(ReferenceScores {
        vmaf: mean("vmaf")?,
        psnr_y: mean("psnr_y")?,
        ssim: mean("float_ssim")?,
    })
}

/// The model every score is computed with (VMAF's standard 1080p model, built in).
pub const MODEL: &str = "vmaf_v0.6.1";

/// Per-frame metrics of one frame pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameScores {
    pub vmaf: f64,
    pub psnr_y: f64,
    pub psnr_cb: f64,
    pub psnr_cr: f64,
    pub ssim: f64,
}

/// One libvmaf session: feed frame pairs in order, then collect per-frame scores.
pub struct Vmaf {
    ctx: *mut VmafContextRaw,
    model: *mut VmafModelRaw,
    width: u32,
    height: u32,
    bpc: u32,
    frames: u32,
    flushed: bool,
}

// SAFETY: the context is used from one thread at a time (&mut self); libvmaf's own worker
// threads are internal to it.
unsafe impl Send for Vmaf {}

fn check(rc: c_int, what: &str) -> Result<(), QualityError> {
    if rc < 0 {
        Err(QualityError::Vmaf(format!("{what} failed ({rc})")))
    } else {
        Ok(())
    }
}

impl Vmaf {
    /// A session for `width`×`height` 4:2:0 frames of `bpc` bits (8 or 10), on `threads`
    /// worker threads (0: libvmaf works on the caller's thread).
    pub fn new(width: u32, height: u32, bpc: u32, threads: u32) -> Result<Self, QualityError> {
        let mut ctx = ptr::null_mut();
        let cfg = VmafConfiguration {
            log_level: VMAF_LOG_LEVEL_NONE,
            n_threads: threads,
            n_subsample: 1,
            cpumask: 0,
        };
        // SAFETY: out-pointer to a fresh context.
        check(unsafe { vmaf_init(&mut ctx, cfg) }, "vmaf_init")?;
        let mut this = Self {
            ctx,
            model: ptr::null_mut(),
            width,
            height,
            bpc,
            frames: 0,
            flushed: false,
        };
        let name = CString::new("vmaf").expect("static");
        let version = CString::new(MODEL).expect("static");
        let mut mcfg = VmafModelConfig {
            name: name.as_ptr(),
            flags: 0,
        };
        check(
            // SAFETY: config and version outlive the call; the model is destroyed in Drop.
            unsafe { vmaf_model_load(&mut this.model, &mut mcfg, version.as_ptr()) },
            "loading the vmaf_v0.6.1 model",
        )?;
        check(
            // SAFETY: the context and the model loaded above are live until Drop.
            unsafe { vmaf_use_features_from_model(this.ctx, this.model) },
            "vmaf_use_features_from_model",
        )?;
        for feature in ["psnr", "float_ssim"] {
            let f = CString::new(feature).expect("static");
            check(
                // SAFETY: the context is live and `f` a NUL-terminated name that outlives the call;
                // NULL means no options.
                unsafe { vmaf_use_feature(this.ctx, f.as_ptr(), ptr::null_mut()) },
                &format!("enabling {feature}"),
            )?;
        }
        Ok(this)
    }

    /// Hand over the next pair. `fill(plane, row) -> &[u8]` gives the bytes of one row of a
    /// plane (Y, U, V) of the reference (`false`) or distorted (`true`) frame: width × bytes
    /// per sample long.
    pub fn push(
        &mut self,
        reference: &dyn Fn(usize, usize) -> *const u8,
        distorted: &dyn Fn(usize, usize) -> *const u8,
    ) -> Result<(), QualityError> {
        let mut r = self.picture(reference)?;
        let mut d = match self.picture(distorted) {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: allocated by vmaf_picture_alloc above.
                unsafe { vmaf_picture_unref(&mut r) };
                return Err(e);
            }
        };
        check(
            // SAFETY: libvmaf takes ownership of both pictures (it unrefs them when done).
            unsafe { vmaf_read_pictures(self.ctx, &mut r, &mut d, self.frames) },
            "vmaf_read_pictures",
        )?;
        self.frames += 1;
        Ok(())
    }

    fn picture(
        &self,
        rows: &dyn Fn(usize, usize) -> *const u8,
    ) -> Result<VmafPicture, QualityError> {
        // SAFETY: plain-data out struct, filled by vmaf_picture_alloc.
        let mut pic: VmafPicture = unsafe { std::mem::zeroed() };
        check(
            // SAFETY: `pic` is a zeroed out-struct vmaf_picture_alloc fills in.
            unsafe {
                vmaf_picture_alloc(
                    &mut pic,
                    VMAF_PIX_FMT_YUV420P,
                    self.bpc,
                    self.width,
                    self.height,
                )
            },
            "vmaf_picture_alloc",
        )?;
        let bytes = if self.bpc > 8 { 2 } else { 1 };
        for plane in 0..3 {
            let (w, h) = (pic.w[plane] as usize, pic.h[plane] as usize);
            for y in 0..h {
                // SAFETY: the callback's row holds w samples; the picture's row holds stride
                // bytes ≥ w × bytes.
                unsafe {
                    let dst = (pic.data[plane] as *mut u8).offset(pic.stride[plane] * y as isize);
                    ptr::copy_nonoverlapping(rows(plane, y), dst, w * bytes);
                }
            }
        }
        Ok(pic)
    }

    /// Frames handed over so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Wait for every frame's features and return the per-frame scores, in order.
    pub fn finish(&mut self) -> Result<Vec<FrameScores>, QualityError> {
        if !self.flushed {
            check(
                // SAFETY: null pictures flush the queue of a live context.
                unsafe { vmaf_read_pictures(self.ctx, ptr::null_mut(), ptr::null_mut(), 0) },
                "flushing libvmaf",
            )?;
            self.flushed = true;
        }
        let names = ["psnr_y", "psnr_cb", "psnr_cr", "float_ssim"]
            .map(|n| CString::new(n).expect("static"));
        (0..self.frames)
            .map(|i| {
                let mut vmaf = 0.0;
                check(
                    // SAFETY: the context and model are live and `vmaf` a local the call writes.
                    unsafe { vmaf_score_at_index(self.ctx, self.model, &mut vmaf, i) },
                    "vmaf_score_at_index",
                )?;
                let mut f = [0.0f64; 4];
                for (v, n) in f.iter_mut().zip(&names) {
                    check(
                        // SAFETY: the context is live, `n` a NUL-terminated feature name, `v` a
                        // local the call writes.
                        unsafe { vmaf_feature_score_at_index(self.ctx, n.as_ptr(), v, i) },
                        &format!("reading {}", n.to_string_lossy()),
                    )?;
                }
                Ok(FrameScores {
                    vmaf,
                    psnr_y: f[0],
                    psnr_cb: f[1],
                    psnr_cr: f[2],
                    ssim: f[3],
                })
            })
            .collect()
    }
}

impl Drop for Vmaf {
    fn drop(&mut self) {
        // SAFETY: created in new(); close waits for libvmaf's threads.
        unsafe {
            if !self.flushed && self.frames > 0 {
                vmaf_read_pictures(self.ctx, ptr::null_mut(), ptr::null_mut(), 0);
            }
            if !self.model.is_null() {
                vmaf_model_destroy(self.model);
            }
            vmaf_close(self.ctx);
        }
    }
}
