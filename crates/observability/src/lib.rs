//! What guestcomm's long-running binaries (`guestcomm-agent`, `guestcommd`)
//! share around their libraries: the `tracing` subscriber (text or JSON on
//! stderr, which journald picks up under systemd) and waiting for SIGINT or
//! SIGTERM. Libraries only emit events; only binaries call [`init`].
//!
//! The level comes from `GUESTCOMM_LOG` (an `EnvFilter` directive such as
//! `info` or `guestcomm_agent=debug`), defaulting to `info`.

use tracing_subscriber::EnvFilter;

/// Log record format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for journald or a log shipper.
    Json,
}

/// Installs the global subscriber; call once, from `main`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("GUESTCOMM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes at the first SIGINT or SIGTERM, logging which.
pub async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT, stopping"),
        _ = term.recv() => tracing::info!("SIGTERM, stopping"),
    }
    Ok(())
}
