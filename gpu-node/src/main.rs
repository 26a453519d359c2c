//! `kiln-gpu-node`: a fleet node. `kiln-gpu-node probe` prints what this machine can do (codecs
//! that actually open, the wgpu adapter and the image resize path chosen on it) as JSON.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("probe") => {
            let resize = kiln_gpu_node::gpu::choice();
            let report = serde_json::json!({
                "media": kiln_gpu_node::media::capabilities(),
                "image_resize": resize,
                "cpu_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: kiln-gpu-node probe\n\n\
                 Running as a fleet node (REDIS_URL, KILN_STORAGE_URL) is not built yet: until the\n\
                 Redis queue lands, `kiln-control-plane` runs the embedded default with a local node\n\
                 in its own process."
            );
            ExitCode::from(2)
        }
    }
}
