//! Logging for the daemon binary: `tracing` events to stderr (journald
//! picks them up under systemd), as text or JSON. The level comes from
//! `GUESTCOMM_LOG` (an `EnvFilter` directive), defaulting to `info`.

use tracing_subscriber::EnvFilter;

/// Log record format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON objects, for a log shipper.
    Json,
}

/// Installs the global subscriber; call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("GUESTCOMM_LOG").unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if format == LogFormat::Json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}
