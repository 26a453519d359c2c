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
//! `kiln-bench chunks [--codecs h264,h265,av1] [--secs 60] [--slots 1,2,4]`: one long title in
//! chunks vs the same encode whole: speedup per slot count and BD-rate (see `chunks`);
//! `--nodes 1,2` times it through a fleet of node processes pinned to their cores instead.
//!
//! `kiln-bench sched [--submissions N] [--clients N] [--latency-jobs N] [--database URL]`:
//! scheduling overhead through the API against `redis-benchmark` on the same Redis (see
//! `sched`).

mod api;
mod bdrate;
mod chunks;
mod image;
mod ladder;
mod per_title;
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

/// `kiln-bench`: Kiln's benchmark harness (ratios side by side, never timed tests).
#[derive(Debug, clap::Parser)]
#[command(name = "kiln-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Kiln's pipeline vs the `ffmpeg` CLI on the same clips and settings.
    Video(video::Args),
    /// The wgpu resize kernel vs fast_image_resize; whole requests vs `vipsthumbnail`.
    Image(image::Args),
    /// A 4-rung ladder from one decode vs 4 `ffmpeg` runs and one `ffmpeg` split graph.
    Ladder(ladder::Args),
    /// Per-title ladders vs the fixed default ladder: BD-rate of their hulls on VMAF.
    PerTitle(per_title::Args),
    /// One long title in chunks on 1, 2 and 4 slots vs the same encode whole: speedup and
    /// BD-rate.
    Chunks(chunks::Args),
    /// Scheduling overhead through the API vs `redis-benchmark`.
    Sched(sched::Args),
    /// The codec-tuning harness: sweeps and target-quality searches.
    Tune(tune::Args),
    /// VMAF throughput of the harness vs libvmaf's `vmaf` CLI.
    Vmaf(vmaf::Args),
    /// The child process a Kiln transcode runs in (see `video`).
    #[command(name = video::CHILD, hide = true)]
    TranscodeChild {
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The child process a Kiln ladder runs in (see `ladder`).
    #[command(name = ladder::CHILD, hide = true)]
    LadderChild {
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The child process Kiln's image requests run in (see `image`).
    #[command(name = image::CHILD, hide = true)]
    ImageChild {
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Prints the resize path this machine would choose (see `image`).
    #[command(name = image::CHOICE_CHILD, hide = true)]
    ImageChoiceChild,
}

fn main() -> ExitCode {
    let cli: Cli = kiln_protocol::cli::parse_process();
    match cli.command {
        Bench::Video(a) => video::main(a),
        Bench::Image(a) => image::main(a),
        Bench::Ladder(a) => ladder::main(a),
        Bench::LadderChild { args } => ladder::child(&args),
        Bench::PerTitle(a) => per_title::main(a),
        Bench::Chunks(a) => chunks::main(a),
        Bench::Sched(a) => sched::main(a),
        Bench::Tune(a) => tune::main(a),
        Bench::Vmaf(a) => vmaf::main(a),
        Bench::TranscodeChild { args } => video::child(&args),
        Bench::ImageChild { args } => image::child(&args),
        Bench::ImageChoiceChild => image::choice_child(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn bad_numbers_are_refused_not_defaulted() {
        // `--runs abc` used to become 3 without a word.
        for args in [
            &["kiln-bench", "video", "--runs", "abc"][..],
            &["kiln-bench", "video", "--runs", "0"],
            &["kiln-bench", "ladder", "--runs", "0"],
            &["kiln-bench", "image", "--images", "-2"],
            &["kiln-bench", "sched", "--clients", "many"],
            &["kiln-bench", "vmaf", "--runs"],
            &["kiln-bench", "tune", "spec.toml", "--api", "http://x"],
            &["kiln-bench", "tune", "clip.mp4", "--target-vmaf", "120"],
            &["kiln-bench", "tune"],
            &["kiln-bench", "video", "--bogus"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} accepted");
        }
        let cli = Cli::try_parse_from(["kiln-bench", "video", "--runs", "5", "a.mp4"]).unwrap();
        assert!(
            matches!(cli.command, Bench::Video(video::Args { runs: 5, ref clips }) if clips.len() == 1)
        );
        let cli = Cli::try_parse_from([
            "kiln-bench",
            "tune",
            "--target-vmaf",
            "93",
            "a.mp4",
            "b.mp4",
            "--verify",
        ])
        .unwrap();
        let Bench::Tune(t) = cli.command else {
            panic!("not tune")
        };
        assert_eq!(
            (t.target_vmaf, t.inputs.len(), t.verify, t.samples),
            (Some(93.0), 2, true, 4)
        );
        // The hidden child commands take their arguments as given.
        let cli = Cli::try_parse_from([
            "kiln-bench",
            video::CHILD,
            "in",
            "out",
            "{\"codec\":\"h264\"}",
        ])
        .unwrap();
        assert!(matches!(cli.command, Bench::TranscodeChild { ref args } if args.len() == 3));
    }
}
