//! `guestcommd`: parses arguments, sets up logging and runs the daemon
//! library until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use guestcomm_api::Role;
use guestcomm_observability::{self as observability, LogFormat};
use guestcomm_protocol::duration::{parse_duration_ms, DurationError, TimeUnit};
use guestcomm_transport::Address;
use guestcommd::{ApiEndpoint, Config, Daemon, FileConfig, HttpLimits, DEFAULT_CONFIG_PATH};
use guestcommd::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HTTP_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONCURRENT_PROBES,
    DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER,
    DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS,
};

/// The guestcomm host daemon: keeps the VM inventory and the registry of
/// guest communication services, lets only registered and enabled services
/// through to each VM's agent (for callers whose role allows it, within each
/// VM's policy), audits every operation, watches the agents' health, and
/// serves an HTTP/JSON API (OpenAPI at /openapi.json) on a Unix socket or
/// over TCP with mutual TLS.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit status: 0 after SIGINT/SIGTERM, 1 on a start-up error.\nLog level: GUESTCOMM_LOG (e.g. debug), default info."
)]
struct Args {
    /// State directory (SQLite database); created if missing.
    #[arg(long, value_name = "DIR")]
    state: std::path::PathBuf,

    /// API address: unix:///PATH (socket mode 0660; callers by their
    /// user), or tcp://IP:PORT with mutual TLS ([api.tls] in --config;
    /// callers by their client certificate).
    #[arg(long, value_name = "ADDR", default_value = guestcomm_api::DEFAULT_API_ADDRESS)]
    api: Address,

    /// Interval between health probes of each VM: e.g. 5s, 200ms; `off`
    /// disables the monitor (every VM then stays "No Contact").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          default_value_t = format!("{DEFAULT_HEARTBEAT_INTERVAL_MS}ms"))]
    heartbeat_interval: String,

    /// Configuration file: roles on the API, the socket's group, TLS for a
    /// tcp:// API, audit retention (see docs/SECURITY.md). Without this flag the default path
    /// is read if it exists; with it the file must exist.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// Step each VM's guest clock to the host's at this interval when it is
    /// off by more than 1 ms (e.g. 10m, 3600s); needs the health monitor
    /// (only VMs whose agent answers are synced). Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "off")]
    time_sync_interval: String,

    /// Close a copy relayed to a guest (`guestcomm cp` with a VM name)
    /// when no byte has moved either way for this long (e.g. 120s, 10m):
    /// its slot is released and its audit record says `stalled`. Keep it
    /// above the CLI's and the agent's copy idle timeouts (60 s by default),
    /// which report a stall with a clearer error first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          default_value_t = format!("{}s", DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS / 1000))]
    copy_idle_timeout: String,

    /// Close an API connection (Unix socket, TCP, --wbem) whose request
    /// header has not fully arrived this long after the daemon began
    /// waiting for it: a new connection, or a kept-alive one after its last
    /// answer (e.g. 15s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          default_value_t = format!("{}s", DEFAULT_HTTP_HEADER_TIMEOUT_MS / 1000))]
    http_header_timeout: String,

    /// Most HTTP connections of one peer on each API listener: a user
    /// (uid) on the Unix socket, an address on TCP (the loopback range
    /// counts as one). A connection past it is closed at once. Exec and cp
    /// through the daemon leave this count once upgraded; root and the
    /// daemon's user on the Unix socket are not counted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER)]
    max_http_connections_per_peer: usize,

    /// Most HTTP connections of each API listener in all; on the Unix
    /// socket root's and the daemon user's do not count, so an admin
    /// still gets in when other users fill it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_HTTP_CONNECTIONS)]
    max_http_connections: usize,

    /// Most health probes in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_PROBES)]
    max_concurrent_probes: usize,

    /// Do not keep warm agent connections: by default, after an operation
    /// on a VM the daemon opens and authenticates the next connection to
    /// its agent ahead of time (kept 5 s), which saves the next exec or cp
    /// the connect and handshake. Turn off for agents with a tight
    /// --max-connections.
    #[arg(long)]
    no_warm_connections: bool,

    /// Also serve WBEM (CIM-XML at /cimom, for CIM clients such as
    /// pywbem) over plain HTTP on this loopback address, e.g.
    /// tcp://127.0.0.1:5988. The API socket serves /cimom in any case.
    #[arg(long, value_name = "ADDR")]
    wbem: Option<Address>,

    /// The role of every caller of --wbem, since plain HTTP identifies
    /// nobody: viewer (reads only), operator, or admin (methods too:
    /// anyone who can connect to the port may then change services and
    /// copy host files into guests).
    #[arg(long, value_name = "ROLE", default_value = "viewer", value_parser = parse_role)]
    wbem_role: Role,

    /// Follow the domains of the libvirt at this URI (e.g.
    /// qemu:///system; `[libvirt] uri` in --config): each domain with a
    /// guestcomm endpoint (the guestcomm element of its <metadata>, else
    /// its <vsock> device's CID) becomes a VM named after it, with its
    /// UUID as id and a key of its own; its state (running, paused, off)
    /// shows in the VM's status at once, and an undefined domain's VM goes
    /// (its audit records stay). Reconnects when libvirtd restarts. Needs
    /// a guestcommd built with the `libvirt` feature.
    #[arg(long, value_name = "URI")]
    libvirt: Option<String>,

    /// With --libvirt: write the key of each domain the daemon adds into
    /// this directory (UUID.key, owner root, the directory's group, mode
    /// 0640: give the directory QEMU's group) and add the fwcfg entry
    /// naming it to the domain's persistent definition, so the guest finds
    /// its key at its next start (`[libvirt] key_dir` in --config). Without
    /// it, domains are never changed.
    #[arg(long, value_name = "DIR")]
    libvirt_key_dir: Option<std::path::PathBuf>,
    /// Also serve Prometheus metrics (GET /metrics, the only route;
    /// OpenMetrics text when asked for, else Prometheus' text format;
    /// `[metrics] listen` in --config) over plain HTTP on this address,
    /// e.g. tcp://127.0.0.1:9464. Any address may be chosen:
    /// the content is read-only counters and gauges (VM names, service ids,
    /// operation names, durations, byte counts) and carries no secrets. The
    /// API serves GET /metrics to every role in any case.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<Address>,

    /// Record no metrics at all (`[metrics] enabled = false` in --config):
    /// GET /metrics is then refused, and operations skip their counters.
    #[arg(long, conflicts_with = "metrics")]
    no_metrics: bool,

    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

/// `viewer`, `operator` or `admin`.
fn parse_role(text: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.name() == text)
        .ok_or_else(|| format!("invalid role {text:?}: expected viewer, operator or admin"))
}

/// `5s`, `200ms`: a positive number with a unit; or `off`.
fn parse_duration(text: &str) -> Result<String, String> {
    to_duration(text).map(|_| text.to_string())
}

fn to_duration(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    match parse_duration_ms(
        text,
        &[TimeUnit::Millis, TimeUnit::Seconds, TimeUnit::Minutes],
    ) {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
        Err(DurationError::NoUnit) => Err(format!(
            "invalid duration {text:?}: expected e.g. 5s, 200ms or off (minutes: 10m)"
        )),
        Ok(_) | Err(DurationError::NotANumber) => Err(format!(
            "invalid duration {text:?}: expected a positive whole number, e.g. 5s or 200ms"
        )),
    }
}

fn main() -> ExitCode {
    if guestcomm_generate::requested() {
        return guestcomm_generate::main(Args::command(), "8");
    }
    let args = Args::parse();
    observability::init(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestcommd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let api = match args.api {
        Address::Unix(path) => ApiEndpoint::Unix(path),
        Address::Tcp(addr) => ApiEndpoint::Tcp(addr),
        other => anyhow::bail!("--api {other}: expected unix:///PATH or tcp://IP:PORT"),
    };
    let wbem = match args.wbem {
        None => None,
        Some(Address::Tcp(addr)) => Some(addr),
        Some(other) => anyhow::bail!("--wbem {other}: expected tcp://127.0.0.1:PORT"),
    };
    let metrics_flag = args.metrics.clone();
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    let file = FileConfig::load(&config_path, args.config.is_some())?;
    // After the configuration: a start that fails on it says only that.
    observability::raise_open_files_limit(guestcommd::OPEN_FILES_WANTED);
    let libvirt = args.libvirt.clone().or_else(|| file.libvirt.uri.clone());
    let mut file = file;
    if let Some(dir) = args.libvirt_key_dir.clone() {
        file.libvirt.key_dir = Some(dir);
    }
    let metrics = match metrics_flag {
        Some(address) => Some(address),
        None => match &file.metrics.listen {
            Some(text) => Some(
                text.parse::<Address>()
                    .map_err(|e| anyhow::anyhow!("[metrics] listen {text:?}: {e}"))?,
            ),
            None => None,
        },
    };
    let metrics = match metrics {
        None => None,
        Some(Address::Tcp(addr)) => Some(addr),
        Some(other) => anyhow::bail!("--metrics {other}: expected tcp://IP:PORT"),
    };
    let metrics_enabled = !args.no_metrics && file.metrics.enabled != Some(false);
    if let (false, Some(addr)) = (metrics_enabled, metrics) {
        anyhow::bail!(
            "metrics are off (--no-metrics, or [metrics] enabled = false in {}), yet [metrics] listen or --metrics serves them on tcp://{addr}: drop one of the two",
            config_path.display()
        );
    }
    let config = Config {
        libvirt,
        metrics,
        metrics_enabled,
        file,
        config_path,
        state_dir: args.state,
        api,
        heartbeat_interval: to_duration(&args.heartbeat_interval).map_err(anyhow::Error::msg)?,
        max_concurrent_probes: args.max_concurrent_probes.max(1),
        warm_connections: !args.no_warm_connections,
        time_sync_interval: to_duration(&args.time_sync_interval).map_err(anyhow::Error::msg)?,
        wbem,
        wbem_role: args.wbem_role,
        relay_copy_idle: to_duration(&args.copy_idle_timeout)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| {
                anyhow::anyhow!("--copy-idle-timeout off: relayed copies must have an idle bound")
            })?,
        http: HttpLimits {
            header_timeout: to_duration(&args.http_header_timeout)
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--http-header-timeout off: API connections must have a header bound"
                    )
                })?,
            per_peer: args.max_http_connections_per_peer.max(1),
            total: args.max_http_connections.max(1),
        },
    };
    let daemon = Daemon::bind(config).await.context("failed to start")?;
    tokio::select! {
        served = daemon.run() => served.context("the API server failed")?,
        stopped = observability::stop_signal() => stopped.context("failed to install the signal handlers")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_positive_milliseconds_seconds_or_minutes_or_off() {
        assert_eq!(to_duration("off"), Ok(None));
        assert_eq!(to_duration("200ms"), Ok(Some(Duration::from_millis(200))));
        assert_eq!(to_duration("5s"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(to_duration("10m"), Ok(Some(Duration::from_secs(600))));
        for no_unit in ["5", "2h", "7d", "soon"] {
            assert_eq!(
                to_duration(no_unit),
                Err(format!(
                    "invalid duration {no_unit:?}: expected e.g. 5s, 200ms or off (minutes: 10m)"
                ))
            );
        }
        for not_positive in ["0s", "-5s", "1.5s", "ms"] {
            assert_eq!(
                to_duration(not_positive),
                Err(format!(
                    "invalid duration {not_positive:?}: expected a positive whole number, e.g. 5s or 200ms"
                ))
            );
        }
    }
}
