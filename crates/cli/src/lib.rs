//! The `guestcomm` command line: what an operator types.
//!
//! [`Cli`] is the whole argument grammar (one file per subcommand under
//! [`commands`]); [`run`] turns a parsed command line into an exit code.
//! [`target`] decides whether a TARGET is a transport address (direct mode)
//! or a VM name (through the daemon), [`terminal`] owns the local terminal
//! (raw mode, window size), [`exit`] the exit-code conventions and
//! [`progress`] the progress bar of `cp`.

pub mod commands;
pub mod exit;
pub mod progress;
pub mod session;
pub mod target;
pub mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How long an interrupted copy may take to remove its temporary files.
const COPY_CLEANUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run commands in virtual machines and manage their guest communication
/// services.
///
/// TARGET is a transport address of a guest agent (direct mode, no daemon):
///   unix:///PATH, tcp://127.0.0.1:PORT, vsock://CID[:PORT],
///   hvsock-uds:///PATH[?port=PORT] (Firecracker, Cloud Hypervisor,
///   vhost-device-vsock).
/// or a VM name known to the guestcommd daemon (see `guestcomm vm`).
#[derive(Debug, Parser)]
#[command(name = "guestcomm", version, after_help = exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// Address of the guestcommd API: unix:///PATH (default
    /// unix:///run/guestcomm/api.sock), or tcp://IP:PORT with mutual TLS
    /// (--api-cert, --api-key, --api-ca).
    #[arg(
        long,
        global = true,
        env = "GUESTCOMM_API",
        value_name = "ADDR",
        help_heading = "API connection"
    )]
    pub api: Option<String>,

    /// With a tcp:// API: this client's certificate (PEM); guestcommd maps
    /// its fingerprint to a role.
    #[arg(long, global = true, env = "GUESTCOMM_API_CERT", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_key", "api_ca"])]
    pub api_cert: Option<std::path::PathBuf>,

    /// With a tcp:// API: the private key of --api-cert (PEM).
    #[arg(long, global = true, env = "GUESTCOMM_API_KEY", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_cert", "api_ca"])]
    pub api_key: Option<std::path::PathBuf>,

    /// With a tcp:// API: the CA that signed guestcommd's certificate (PEM;
    /// the certificate must name the IP address dialled).
    #[arg(long, global = true, env = "GUESTCOMM_API_CA", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_cert", "api_key"])]
    pub api_ca: Option<std::path::PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in the guest, streaming stdin, stdout and stderr.
    Exec(commands::exec::ExecArgs),
    /// Create keys that authenticate host and agent to each other.
    Identity(commands::identity::IdentityArgs),
    /// Manage the VMs known to guestcommd.
    Vm(commands::vm::VmArgs),
    /// Manage the registered guest communication services.
    Service(commands::service::ServiceArgs),
    /// Show the health of a VM's agent.
    Status(commands::status::StatusArgs),
    /// Connect stdin and stdout to a guest communication service of a VM.
    Connect(commands::connect::ConnectArgs),
    /// Copy files and directories into or out of the guest.
    Cp(commands::cp::CpArgs),
    /// Show the guest's OS, kernel, resources, filesystems, network and users.
    Info(commands::info::InfoArgs),
    /// Show the guest clock's offset from the host's, or set it (--sync).
    Time(commands::time::TimeArgs),
    /// Read and write the VM's key-value pools.
    Kvp(commands::kvp::KvpArgs),
    /// Power off or reboot the guest.
    Shutdown(commands::shutdown::ShutdownArgs),
    /// Freeze and thaw guest filesystems for consistent backups.
    Fs(commands::fs::FsArgs),
    /// Show the audit log of guestcommd.
    Audit(commands::audit::AuditArgs),
    /// Show or set a VM's argument-level policy (programs, paths, read-only).
    Policy(commands::policy::PolicyArgs),
    /// The management model as CIM objects (WBEM): enumerate, get, query,
    /// follow associations, invoke methods.
    Cim(commands::cim::CimArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    if let (Some(cert), Some(key), Some(ca)) = (&cli.api_cert, &cli.api_key, &cli.api_ca) {
        commands::api::set_tls_files(guestcomm_api::tls::ClientTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        });
    }
    let command = match cli.command {
        Command::Identity(args) => return commands::identity::run(args),
        command => command,
    };
    // An exec is one connection and the terminal: one thread serves it, and
    // starting no worker threads takes a tenth of a millisecond off every
    // `guestcomm exec`. Copies hash and move files while the socket flows:
    // two workers.
    let runtime = match &command {
        Command::Exec(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            return exit::fail(&anyhow::Error::new(e).context("failed to start the async runtime"))
        }
    };
    // A copy's file work runs on blocking threads that remove their
    // temporary files when interrupted: let them finish.
    let wait_for_blocking = matches!(command, Command::Cp(_));
    let code = runtime.block_on(async {
        match command {
            Command::Exec(args) => commands::exec::run(args, cli.api.as_deref()).await,
            Command::Identity(_) => unreachable!("handled without a runtime"),
            Command::Vm(args) => commands::vm::run(args, cli.api.as_deref()).await,
            Command::Service(args) => commands::service::run(args, cli.api.as_deref()).await,
            Command::Status(args) => commands::status::run(args, cli.api.as_deref()).await,
            Command::Connect(args) => commands::connect::run(args, cli.api.as_deref()).await,
            Command::Cp(args) => commands::cp::run(args, cli.api.as_deref()).await,
            Command::Info(args) => commands::info::run(args, cli.api.as_deref()).await,
            Command::Time(args) => commands::time::run(args, cli.api.as_deref()).await,
            Command::Kvp(args) => commands::kvp::run(args, cli.api.as_deref()).await,
            Command::Shutdown(args) => commands::shutdown::run(args, cli.api.as_deref()).await,
            Command::Fs(args) => commands::fs::run(args, cli.api.as_deref()).await,
            Command::Audit(args) => commands::audit::run(args, cli.api.as_deref()).await,
            Command::Policy(args) => commands::policy::run(args, cli.api.as_deref()).await,
            Command::Cim(args) => commands::cim::run(args, cli.api.as_deref()).await,
        }
    });
    if wait_for_blocking {
        runtime.shutdown_timeout(COPY_CLEANUP_WAIT);
    } else {
        // Stdin is read on a blocking thread that may sit in read(2)
        // forever; do not wait for it.
        runtime.shutdown_background();
    }
    code
}
