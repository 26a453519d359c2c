//! `kiln-bench`: Kiln's benchmark harness. Speed is measured as ratios run side by side, never
//! as timed tests.
//!
//! `kiln-bench video [--runs N] [CLIP ...]`: the same clips with the same settings through
//! Kiln's pipeline and through the `ffmpeg` CLI, interleaved, each run a child process so peak
//! memory is measured the same way for both; prints Kiln fps / ffmpeg fps per encoder setting,
//! one job and two concurrent jobs.
//!
//! `kiln-bench image [--runs N] [--images N] [--kernel-only]`: the wgpu resize kernel vs fast_image_resize, and
//! whole image requests vs `vipsthumbnail` (see `image`).
//!
//! `kiln-bench tune SPEC` / `kiln-bench tune --target-vmaf 95 CLIP…`: the codec-tuning harness
//! (see `tune`).
//!
//! `kiln-bench vmaf [--runs N] [REF DIST]`: VMAF throughput of the harness against libvmaf's
//! `vmaf` CLI on the same pair (see `vmaf`).
//!
//! `kiln-bench sched [--submissions N] [--clients N] [--latency-jobs N] [--database URL]`:
//! scheduling overhead through the API against `redis-benchmark` on the same Redis (see
//! `sched`).

mod bdrate;
mod image;
mod sched;
mod tune;
mod video;
mod vmaf;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A real media sample: `$KILN_MEDIA_DIR`, else `../shared/media` beside the checkout.
pub fn media(rel: &str) -> PathBuf {
    std::env::var_os("KILN_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"))
        .join(rel)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("video") => video::main(&args[1..]),
        // The child process a Kiln run happens in (see `video`).
        Some(video::CHILD) => video::child(&args[1..]),
        Some("image") => image::main(&args[1..]),
        Some("sched") => sched::main(&args[1..]),
        Some("tune") => tune::main(&args[1..]),
        Some("vmaf") => vmaf::main(&args[1..]),
        Some(image::CHILD) => image::child(&args[1..]),
        Some(image::CHOICE_CHILD) => image::choice_child(),
        _ => {
            eprintln!(
                "usage: kiln-bench video [--runs N] [CLIP ...]\n       \
                 kiln-bench image [--runs N] [--images N] [--kernel-only]\n       \
                 kiln-bench sched [--submissions N] [--clients N] [--latency-jobs N] [--database URL]\n       \
                 kiln-bench tune SPEC.toml [--out DIR] [--api URL --key KEY]\n       \
                 kiln-bench tune --target-vmaf SCORE CLIP... [--encoder E] [--preset P] [--verify] [--compare-bisection]\n       \
                 kiln-bench vmaf [--runs N] [REFERENCE DISTORTED]"
            );
            ExitCode::from(2)
        }
    }
}
