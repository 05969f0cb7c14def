//! `guestcomm-agent`: the guest side of guestcomm. Parses arguments, sets up
//! logging and runs the agent library until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use guestcomm_agent::{Agent, AgentConfig, LocalKvp, LocalOutput, ShutdownRunner};
use guestcomm_files::parse_size;
use guestcomm_observability as observability;
use guestcomm_transport::{Address, PeerCidFilter};

/// The guestcomm guest agent: serves command execution, file copy,
/// key-value exchange, shutdown, time, guest information and filesystem
/// freeze to the host.
///
/// `guestcomm-agent kvp ...` is the guest programs' side of the key-value
/// pools: it talks to the running agent over its local socket.
///
/// Run it inside the guest, listening on vsock, e.g.
/// `guestcomm-agent --listen vsock://any:18243`; on a Hyper-V Linux guest the
/// same port is the service GUID 00004743-facb-11e6-bd58-64006a7986d3.
/// For tests and containers it also listens on Unix sockets and loopback TCP.
#[derive(Debug, Parser)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a start-up error.\nLog level: GUESTCOMM_LOG, one of error, warn, info, debug, trace, off; default info\n(per-target directives are guestcommd's, not the agent's)."
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
    /// client must then prove it holds the same key. A key is required on
    /// vsock. Without this option the agent looks, in order, for the systemd
    /// credential guestcomm.key ($CREDENTIALS_DIRECTORY: LoadCredential= or
    /// ImportCredential=), QEMU's fw_cfg entry
    /// opt/io.systemd.credentials/guestcomm.key, and an SMBIOS type 11 string
    /// io.systemd.credential[.binary]:guestcomm.key=...; it logs which it
    /// used. A key others can read is refused.
    #[arg(long, value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,

    /// The guest owner's policy (TOML or JSON, as `guestcomm policy set`):
    /// programs exec may run (with their arguments and environment), paths
    /// copies may use, or read-only. A request
    /// runs only if this and the host's policy both allow it.
    #[arg(long, value_name = "FILE")]
    policy: Option<std::path::PathBuf>,

    /// Most connections served at once.
    #[arg(long, value_name = "N", default_value_t = guestcomm_agent::MAX_CONNECTIONS)]
    max_connections: usize,

    /// Fail a file copy as stalled when the host sends nothing (copy into
    /// the guest), or takes nothing and does not answer (copy out of it),
    /// for this many seconds.
    #[arg(long, value_name = "SECONDS",
          default_value_t = guestcomm_protocol::limits::DEFAULT_COPY_IDLE_TIMEOUT_MS / 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    copy_idle_timeout: u64,

    /// Most bytes of file content one copy into the guest may write, e.g.
    /// 10GiB or 500MB (the total of its files' declared sizes); a file that
    /// would pass it is refused before any of its bytes land. Default: no
    /// bound but the disk's.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_copy_bytes: Option<u64>,

    /// Where guest programs reach the key-value pools (`guestcomm-agent
    /// kvp`); `off` for nowhere. Mode 0660: root and the socket's group.
    #[arg(long, value_name = "PATH", default_value = guestcomm_agent::DEFAULT_KVP_SOCKET)]
    kvp_socket: String,

    /// Keep the key-value pools (external and guest) in DIR/kvp.json, so
    /// they survive a restart; without it they live in memory only. With
    /// --credentials, DIR/nonce-epoch also numbers the agent's starts, so
    /// its handshake nonces never repeat even across reboots.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Keep Hyper-V's key-value pool files (.kvp_pool_0 to _4 in
    /// --hyperv-kvp-dir, hv_kvp_daemon's format and locks) in step with the
    /// pools, so programs written for Hyper-V's KVP work unchanged: `auto`
    /// does when that directory exists and the guest has no Hyper-V KVP
    /// device (/dev/vmbus/hv_kvp: on Hyper-V, hv_kvp_daemon owns the files).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = HypervKvp::Auto)]
    hyperv_kvp: HypervKvp,

    /// Also speak the QEMU guest agent protocol (what libvirt, Proxmox and
    /// OpenStack call qemu-ga for) on CHANNEL: a virtio-serial port such as
    /// /dev/virtio-ports/org.qemu.guest_agent.0, or unix:///PATH. The same
    /// services and --policy answer it. Not vsock unless
    /// --qga-allow-unauthenticated-vsock: QGA has no authentication.
    /// Repeat it to serve several channels.
    #[arg(long, value_name = "CHANNEL")]
    qga: Vec<String>,

    /// Let --qga listen on vsock://any:PORT, as `qemu-ga -m vsock-listen`
    /// does. QGA has no authentication, and every user of the host can
    /// connect to a guest's vsock port: each of them could then run any
    /// command in this guest as the agent's user. Only the host (CID 2) is
    /// accepted. Prefer the virtio-serial channel, which only the VMM reaches.
    #[arg(long)]
    qga_allow_unauthenticated_vsock: bool,

    /// Only these QGA commands (comma-separated), as qemu-ga's --allow-rpcs.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    qga_allow_rpcs: Option<Vec<String>>,

    /// Never these QGA commands (comma-separated), as qemu-ga's --block-rpcs.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    qga_block_rpcs: Vec<String>,

    /// Where Hyper-V's pool files are (created by `--hyperv-kvp on`).
    #[arg(long, value_name = "DIR", default_value = guestcomm_agent::HYPERV_KVP_DEFAULT_DIR)]
    hyperv_kvp_dir: PathBuf,

    /// Power off and reboot by running PROGRAM ACTION MODE REASON
    /// (ACTION poweroff|reboot, MODE graceful|force) instead of the init
    /// system (systemctl, shutdown, poweroff) or reboot(2).
    #[arg(long, value_name = "PROGRAM")]
    shutdown_command: Option<PathBuf>,

    /// For tests and demos: report and step a clock SECONDS away from the
    /// real one, never setting the system clock.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    simulated_clock_offset: Option<i64>,

    /// For tests: pretend to freeze filesystems, never issuing FIFREEZE.
    #[arg(long)]
    simulate_fsfreeze: bool,

    /// Log format: text, one line per event (JSON logs are guestcommd's;
    /// the agent links no JSON log formatter).
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,

    /// Guest side of the key-value pools.
    #[command(subcommand)]
    command: Option<Command>,
}

/// When to keep Hyper-V's pool files.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum HypervKvp {
    /// When the directory exists.
    Auto,
    /// Always (the directory is created).
    On,
    /// Never.
    Off,
}

/// The agent's log formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the pools and write the guest pool through the running agent.
    Kvp(KvpArgs),
    /// Connect stdin and stdout to a service on the host (guest-initiated).
    ConnectHost(ConnectHostArgs),
}

/// A guest program's way to a service on the host: connects to the host's
/// vsock (CID 2) on the port of SERVICE's GUID, then relays stdin and
/// stdout. On the host, guestcommd passes the connection to the service's
/// registered host endpoint while the service is enabled for this VM. The
/// end of stdin does not end the connection; the host closing it does.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (in the guest):\n  echo status | guestcomm-agent connect-host 00000ac9-facb-11e6-bd58-64006a7986d3\n\nExit status: 0 when the host closed the connection, 1 on error (not registered, disabled, no host endpoint)."
)]
struct ConnectHostArgs {
    /// The service's GUID, as registered on the host (`guestcomm service register`).
    #[arg(value_name = "SERVICE", required_unless_present = "port")]
    service: Option<guestcomm_protocol::ServiceId>,

    /// The host vsock port, instead of the one SERVICE's GUID names.
    #[arg(long, value_name = "PORT")]
    port: Option<u32>,
}

/// Guest programs' side of the key-value pools: read the host's values
/// (pool external), the agent's own (auto) and the guest pool; write the
/// guest pool, which the host reads.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 on success, 1 on error (unknown key, over a limit, no agent)."
)]
struct KvpArgs {
    /// The agent's local socket.
    #[arg(long, value_name = "PATH", default_value = guestcomm_agent::DEFAULT_KVP_SOCKET, global = true)]
    socket: PathBuf,

    /// Print JSON (list).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    op: LocalKvp,
}

fn main() -> ExitCode {
    #[cfg(feature = "man")]
    if guestcomm_generate::requested() {
        return guestcomm_generate::main(<Args as clap::CommandFactory>::command(), "8");
    }
    let mut args = Args::parse();
    let LogFormat::Text = args.log_format;
    observability::init_text();
    observability::raise_open_files_limit(guestcomm_agent::OPEN_FILES_WANTED);
    match args.command.take() {
        Some(Command::ConnectHost(target)) => {
            return match run_connect_host(target) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let chain = guestcomm_protocol::error_chain(&e);
                    eprintln!("guestcomm-agent: {chain}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Kvp(kvp)) => {
            return match run_kvp(kvp) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("guestcomm-agent: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestcomm-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn run_connect_host(args: ConnectHostArgs) -> Result<(), guestcomm_agent::HostConnectError> {
    let port = guestcomm_agent::host_port(args.service, args.port)?;
    guestcomm_agent::connect_host(port).await
}

#[tokio::main(flavor = "current_thread")]
async fn run_kvp(args: KvpArgs) -> anyhow::Result<()> {
    let json = args.json;
    match guestcomm_agent::local_kvp(&args.socket, args.op).await? {
        LocalOutput::Value(value) => println!("{value}"),
        LocalOutput::Entries(entries) if json => {
            println!("{}", serde_json::to_string_pretty(&entries)?)
        }
        LocalOutput::Entries(entries) => {
            for (k, v) in entries {
                println!("{k}={v}");
            }
        }
        LocalOutput::Done => {}
    }
    Ok(())
}

// One thread serves every connection: the agent's async work is relaying
// bytes, and what blocks (file trees, the integration services) runs on
// tokio's blocking pool; a worker per vCPU would cost every large guest
// memory for nothing (docs/BENCHMARKS.md, "agent idle RSS").
#[tokio::main(flavor = "current_thread")]
async fn run(args: Args) -> anyhow::Result<()> {
    let qga_channels = args
        .qga
        .iter()
        .map(|text| guestcomm_agent::QgaChannel::parse(text, args.qga_allow_unauthenticated_vsock))
        .collect::<Result<Vec<_>, _>>()
        .context("--qga")?;
    let mut config = AgentConfig::new(args.listen);
    config.peer_filter = PeerCidFilter::host_and(&args.allow_peer_cid, args.allow_any_peer);
    config.max_connections = args.max_connections.max(1);
    config.copy_idle_timeout = std::time::Duration::from_secs(args.copy_idle_timeout);
    config.max_copy_bytes = args.max_copy_bytes;
    // A path; `unix://PATH`, as --listen is written, is taken too.
    let kvp_socket = args
        .kvp_socket
        .strip_prefix("unix://")
        .unwrap_or(&args.kvp_socket);
    config.kvp_socket = (kvp_socket != "off").then(|| PathBuf::from(kvp_socket));
    config.state_dir = args.state_dir;
    config.hyperv_kvp_dir = match args.hyperv_kvp {
        HypervKvp::On => Some(args.hyperv_kvp_dir),
        HypervKvp::Auto => (args.hyperv_kvp_dir.is_dir()
            && !Path::new(guestcomm_agent::HYPERV_KVP_DEVICE).exists())
        .then_some(args.hyperv_kvp_dir),
        HypervKvp::Off => None,
    };
    if let Some(program) = args.shutdown_command {
        config.shutdown = ShutdownRunner::Command(program);
    }
    config.simulated_clock_offset_ns = args
        .simulated_clock_offset
        .map(|s| s.saturating_mul(1_000_000_000));
    config.simulate_fsfreeze = args.simulate_fsfreeze;
    let places = guestcomm_agent::CredentialPlaces::system();
    match guestcomm_agent::find_credentials(args.credentials.as_deref(), &places)
        .context("failed to load credentials")?
    {
        Some((psk, source)) => {
            tracing::info!(%source, "using the VM's key");
            config.psk = Some(psk);
        }
        None => tracing::warn!(
            "no key (no --credentials, systemd credential, fw_cfg entry or SMBIOS string): \
             serving unauthenticated clients, on unix:// and loopback tcp:// only"
        ),
    }
    if let Some(path) = &args.policy {
        config.policy = Some(guestcomm_agent::load_policy(path)?);
    }
    let agent = Agent::bind(config).await.context("failed to start")?;
    let services = agent.services();
    // One QGA state (open files, guest-exec processes) for every channel,
    // as one qemu-ga.
    let qga = std::sync::Arc::new(guestcomm_agent::Qga::new(
        services.clone(),
        guestcomm_agent::QgaRpcs {
            allow: args.qga_allow_rpcs,
            block: args.qga_block_rpcs,
        },
    ));
    let _qga: Vec<_> = qga_channels
        .into_iter()
        .map(|channel| {
            AbortOnDrop(tokio::spawn(guestcomm_agent::serve_qga(
                channel,
                qga.clone(),
                services.clone(),
            )))
        })
        .collect();
    tokio::select! {
        () = agent.run() => {}
        stopped = observability::stop_signal() => stopped.context("failed to install the signal handlers")?,
    }
    // The safety timer dies with the agent: leave nothing frozen.
    if let Err(e) = services.freeze.thaw(&[]) {
        tracing::warn!(error = %e, "cannot thaw at exit");
    }
    Ok(())
}

/// Ends a task when dropped (the QGA channel stops with the agent).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
