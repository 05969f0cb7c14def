//! What guestcomm's long-running binaries (`guestcomm-agent`, `guestcommd`)
//! share around their libraries: the `tracing` subscriber (text or JSON on
//! stderr, which journald picks up under systemd) and waiting for SIGINT or
//! SIGTERM, and raising the limit on open files. Libraries only emit
//! events; only binaries call [`init`] or [`init_text`].
//!
//! The level comes from `GUESTCOMM_LOG`, defaulting to `info`. [`init`]
//! (feature `env-filter`, guestcommd's) takes it as an `EnvFilter`
//! directive such as `info` or `guestcommd=debug`, and JSON records with
//! feature `json`; [`init_text`] (the agent's, which runs in every guest
//! and links neither regex nor the JSON formatter) takes one level
//! (`error`, `warn`, `info`, `debug`, `trace` or `off`) and writes text.
//!
//! In the text format every field's value, the message included, goes
//! through [`guestcomm_protocol::text::escape_controls`]: a VM name, a
//! command line or a guest's error text can put no newline or terminal
//! escape into the log, so it can forge no line of it. The JSON format is
//! exact (its encoder escapes what JSON must).

use std::io::IsTerminal;

use guestcomm_protocol::text::Escaped;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::filter::LevelFilter;

/// The environment variable that sets the level.
const LEVEL_VARIABLE: &str = "GUESTCOMM_LOG";

/// Log record format.
#[cfg(feature = "env-filter")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for journald or a log shipper.
    #[cfg(feature = "json")]
    Json,
}

/// Installs the global subscriber, `GUESTCOMM_LOG` read as `EnvFilter`
/// directives; call once, from `main`.
#[cfg(feature = "env-filter")]
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(LEVEL_VARIABLE).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = stderr_builder().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).init(),
        #[cfg(feature = "json")]
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the global subscriber: text lines at the one level
/// `GUESTCOMM_LOG` names (`info` when unset); call once, from `main`. A
/// value that is not a level is logged as a warning and `info` used.
pub fn init_text() {
    let text = std::env::var(LEVEL_VARIABLE).ok();
    let level = text.as_deref().map(|t| t.trim().parse::<LevelFilter>());
    stderr_builder()
        .with_max_level(match level {
            Some(Ok(level)) => level,
            _ => LevelFilter::INFO,
        })
        .fmt_fields(escaped_fields())
        .init();
    if let (Some(text), Some(Err(_))) = (text, level) {
        tracing::warn!(
            value = text,
            "{LEVEL_VARIABLE} is not a level (error, warn, info, debug, trace or off); logging at info"
        );
    }
}

/// The stderr formatter both subscribers start from.
fn stderr_builder() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    LevelFilter,
    fn() -> std::io::Stderr,
> {
    // Colours only on a terminal: journald and log files get plain text,
    // in which any escape sequence is an escaped peer's.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
}

/// The text format's fields: `message name=value ...`, as tracing's
/// default, with each value's text escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(writer, "{}", Escaped(&text))
        } else {
            write!(writer, "{}={}", field.name(), Escaped(&text))
        }
    })
    .delimited(" ")
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

/// Raises this process's soft limit on open files to its hard limit and
/// logs what it did; `wanted` is how many descriptors the binary may need
/// at its own caps, and a lower limit is logged as a warning.
///
/// systemd (and most shells) start services with a soft limit of 1,024
/// while the hard limit is far higher (524,288 under systemd), on the
/// understanding that a program needing more raises its own soft limit:
/// a daemon relaying a thousand connections holds two sockets each.
pub fn raise_open_files_limit(wanted: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let raised = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| {
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
        Ok((soft, hard))
    });
    match raised {
        Ok((soft, hard)) if hard < wanted => tracing::warn!(
            soft,
            hard,
            wanted,
            "the hard limit on open files is below what this process may need at its caps; raise it (systemd: LimitNOFILE=)"
        ),
        Ok((soft, hard)) if soft < hard => {
            tracing::debug!(from = soft, to = hard, "raised the soft limit on open files")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the limit on open files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    #[test]
    fn the_soft_limit_on_open_files_is_raised_to_the_hard_limit() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let low = hard.min(256);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).expect("lower the soft limit");
        raise_open_files_limit(0);
        let (now, still_hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, soft.max(now), hard).expect("restore");
        assert_eq!(now, hard);
        assert_eq!(still_hard, hard);
    }
}
