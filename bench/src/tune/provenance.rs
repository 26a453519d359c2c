//! Where a set of results came from: the software that made and measured the encodes and the
//! machine they ran on, so two reports can be told apart.

use std::ffi::{c_char, CStr};
use std::process::Command;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub kiln: String,
    pub ffmpeg: String,
    pub libvmaf: String,
    pub vmaf_model: String,
    /// The encoder libraries FFmpeg loaded, by file (`libx264.so.164`, …), and the versions
    /// they report where they export one.
    pub encoders: Vec<String>,
    pub cpu: String,
    pub cores: usize,
    pub gpu: String,
    pub gpu_driver: String,
    pub os: String,
    /// Where the encodes ran: this machine, or the fleet at this URL.
    pub ran_on: String,
    pub command: String,
    pub unix_time: u64,
}

pub fn collect(ran_on: &str) -> Provenance {
    // Open every encoder once so their libraries are mapped (and the capabilities known).
    kiln_gpu_node::media::init_ffmpeg_logging();
    let caps = kiln_gpu_node::media::capabilities();
    let ffmpeg = kiln_gpu_node::media::ffmpeg_version();
    let (gpu, gpu_driver) = nvidia().unwrap_or_else(|| {
        (
            if caps.cuda.available {
                "CUDA device".into()
            } else {
                "none (CPU encoders and decoders)".into()
            },
            "-".into(),
        )
    });
    Provenance {
        kiln: env!("CARGO_PKG_VERSION").into(),
        ffmpeg,
        libvmaf: kiln_gpu_node::quality::vmaf::version(),
        vmaf_model: kiln_gpu_node::quality::vmaf::MODEL.into(),
        encoders: encoder_libraries(),
        cpu: cpu_model(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        gpu,
        gpu_driver,
        os: os_name(),
        ran_on: ran_on.into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.into())
}

fn nvidia() -> Option<(String, String)> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,driver_version", "--format=csv,noheader"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (name, driver) = text.lines().next()?.split_once(',')?;
    Some((name.trim().into(), driver.trim().into()))
}

/// The encoder libraries mapped into this process, with versions where they export one.
fn encoder_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.rsplit('/').next())
        .filter(|f| {
            [
                "libx264.so",
                "libx265.so",
                "libSvtAv1Enc.so",
                "libvpx.so",
                "libavcodec.so",
            ]
            .iter()
            .any(|n| f.starts_with(n))
        })
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    for l in &mut libs {
        if l.starts_with("libx265") {
            if let Some(v) = exported_string("x265_version_str", false) {
                l.push_str(&format!(" ({v})"));
            }
        } else if l.starts_with("libSvtAv1Enc") {
            if let Some(v) = exported_string("svt_av1_get_version", true) {
                l.push_str(&format!(" ({v})"));
            }
        }
    }
    libs
}

/// A version string a loaded library exports: a `const char *` variable, or a function
/// returning one.
fn exported_string(symbol: &str, function: bool) -> Option<String> {
    let name = std::ffi::CString::new(symbol).ok()?;
    // SAFETY: looking up a symbol in the libraries already loaded; the symbols named here are
    // documented as `const char *x265_version_str` and `const char *svt_av1_get_version(void)`.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if sym.is_null() {
            return None;
        }
        let s: *const c_char = if function {
            let f: extern "C" fn() -> *const c_char = std::mem::transmute(sym);
            f()
        } else {
            *(sym as *const *const c_char)
        };
        (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}
