//! `kiln-gpu-node`: a fleet node.
//!
//! - `kiln-gpu-node` / `kiln-gpu-node run`: take jobs from Redis (`REDIS_URL`), read sources
//!   and write outputs in `KILN_STORAGE_URL`, until SIGTERM, then drain.
//! - `kiln-gpu-node probe`: print what this machine can do (codecs that actually open, the
//!   wgpu adapter and image resize path, the queue classes it would take) as JSON.

use std::process::ExitCode;

use kiln_gpu_node::node::{Cli, NodeCommand, NodeConfig};

fn main() -> ExitCode {
    kiln_gpu_node::prepare_process();
    let cli: Cli = kiln_protocol::cli::parse_process();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(NodeCommand::Run) {
        NodeCommand::Probe => {
            let probed =
                kiln_gpu_node::node::probe(&cli.settings.gpus, cli.settings.nvenc_sessions);
            probed.gpus.refresh();
            let report = serde_json::json!({
                "media": kiln_gpu_node::media::capabilities(),
                "image_resize": kiln_gpu_node::gpu::choice(),
                "node": probed.capabilities,
                "gpus": probed.gpus.states(),
                "classes": probed.classes,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
            ExitCode::SUCCESS
        }
        NodeCommand::Run => {
            let config = match NodeConfig::from_settings(cli.settings) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("kiln-gpu-node: {e:#}\n\nusage: kiln-gpu-node [run|probe] (--help for the settings)");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("kiln-gpu-node: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(kiln_gpu_node::node::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln-gpu-node: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
