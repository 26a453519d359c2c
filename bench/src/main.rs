//! `kiln-bench`: Kiln's benchmark harness (codec tuning, throughput against plain FFmpeg).
//! The walking skeleton ships the binary and its place in the workspace; the benchmarks arrive
//! with the video pipeline (`video`), image pipeline (`image`), fleet (`sched`) and tuning
//! (`tune`) work.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "kiln-bench: no benchmark is implemented yet.\n\
         planned: video (Kiln vs the ffmpeg CLI), image (wgpu vs CPU resize, Kiln vs vips),\n\
         sched (scheduling overhead), tune (codec sweeps, VMAF, BD-rate)"
    );
    ExitCode::from(2)
}
