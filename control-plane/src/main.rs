//! `kiln-control-plane`: the API server. With no REDIS_URL it runs the embedded default —
//! SQLite, a local store, an in-process queue and a local node — in this one process.

use kiln_control_plane::cli::{Cli, Command};
use std::time::Duration;

use kiln_control_plane::start;

fn main() -> anyhow::Result<()> {
    // Before any thread: the embedded node's GPUs numbered as NVML numbers them, SVT-AV1 quiet.
    kiln_gpu_node::prepare_process();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let cli: Cli = kiln_protocol::cli::parse_process();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match cli.command {
        Some(Command::Keys(cmd)) => {
            println!("{}", kiln_control_plane::cli::keys(&cli.config, cmd).await?);
            return Ok(());
        }
        Some(Command::Serve) | None => {}
    }
    let mut running = start(cli.config).await?;
    // The key block comes last, after the node's probe has said what this machine can do.
    running.node_probed(Duration::from_secs(120)).await;
    println!("Kiln is listening on http://{}", running.addr);
    if let Some(key) = &running.created_admin_key {
        // Printed once, on the first start with an empty database; only its hash is stored.
        let rule = "=".repeat(64);
        println!(
            "\n{rule}\n  Kiln admin API key (shown once: store it now)\n\n    {key}\n\n  \
             curl -H 'Authorization: Bearer {key}' http://{}/api/v1/nodes\n{rule}\n",
            running.addr
        );
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing running jobs");
    running.shutdown().await;
    Ok(())
}
