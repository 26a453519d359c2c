//! `kiln-control-plane`: the API server. With no REDIS_URL it runs the embedded default —
//! SQLite, a local store, an in-process queue and a local node — in this one process.

use kiln_control_plane::{start, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("keys") {
        println!("{}", kiln_control_plane::cli::keys(&args[1..]).await?);
        return Ok(());
    }
    let config = Config::from_env_and_args(|k| std::env::var(k).ok(), &args)?;
    let running = start(config).await?;
    if let Some(key) = &running.created_admin_key {
        // Printed once, on the first start with an empty database; only its hash is stored.
        println!("\nKiln admin API key (shown once, store it now):\n\n    {key}\n");
    }
    println!("Kiln is listening on http://{}", running.addr);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing running jobs");
    running.shutdown().await;
    Ok(())
}
