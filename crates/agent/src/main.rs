//! `guestcomm-agent`: the guest side of guestcomm. Parses arguments, sets up
//! logging and runs the agent library until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use guestcomm_agent::{Agent, AgentConfig};
use guestcomm_observability::{self as observability, LogFormat};
use guestcomm_transport::{Address, PeerCidFilter};

/// The guestcomm guest agent: serves command execution (and, later, files,
/// key-value exchange, shutdown, time and guest information) to the host.
///
/// Run it inside the guest, listening on vsock, e.g.
/// `guestcomm-agent --listen vsock://any:18243`; on a Hyper-V Linux guest the
/// same port is the service GUID 00004743-facb-11e6-bd58-64006a7986d3.
/// For tests and containers it also listens on Unix sockets and loopback TCP.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a start-up error.\nLog level: GUESTCOMM_LOG (e.g. debug), default info."
)]
struct Args {
    /// Address to listen on: vsock://CID:PORT (CID may be `any`),
    /// unix:///PATH or tcp://127.0.0.1:PORT. Repeat to listen on several.
    #[arg(long, required = true, value_name = "ADDR")]
    listen: Vec<Address>,

    /// Also accept vsock connections from this CID (by default only the
    /// host, CID 2, may connect). Repeatable.
    #[arg(long, value_name = "CID")]
    allow_peer_cid: Vec<u32>,

    /// Accept vsock connections from any CID (other guests included).
    #[arg(long)]
    allow_any_peer: bool,

    /// This VM's credentials file (see `guestcomm identity new`): every
    /// client must then prove it holds the same key. Required on vsock.
    #[arg(long, value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,

    /// The guest owner's policy (TOML or JSON, as `guestcomm policy set`):
    /// programs exec may run, paths copies may use, or read-only. A request
    /// runs only if this and the host's policy both allow it.
    #[arg(long, value_name = "FILE")]
    policy: Option<std::path::PathBuf>,

    /// Most connections served at once.
    #[arg(long, value_name = "N", default_value_t = guestcomm_agent::limits::MAX_CONNECTIONS)]
    max_connections: usize,

    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    observability::init(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestcomm-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(args.listen);
    config.peer_filter = PeerCidFilter::host_and(&args.allow_peer_cid, args.allow_any_peer);
    config.max_connections = args.max_connections.max(1);
    if let Some(path) = &args.credentials {
        config.psk = Some(
            guestcomm_protocol::auth::load_credentials(path)
                .context("failed to load credentials")?,
        );
    } else {
        tracing::warn!("no --credentials: serving unauthenticated clients, on unix:// and loopback tcp:// only");
    }
    if let Some(path) = &args.policy {
        config.policy = Some(guestcomm_agent::policy::load(path)?);
    }
    let agent = Agent::bind(config).await.context("failed to start")?;
    tokio::select! {
        () = agent.run() => {}
        stopped = observability::stop_signal() => stopped.context("failed to install the signal handlers")?,
    }
    Ok(())
}
