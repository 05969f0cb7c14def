//! The `guestcomm` command line: what an operator types.
//!
//! [`Cli`] is the whole argument grammar (one file per subcommand under
//! `commands`); [`run`] turns it once into a `Context` (the API client and
//! its TLS files, the `--identity` key, the output format) that every
//! command gets by reference, runs the command, and turns its result into
//! the exit code.
//!
//! The modules, each importing only from those listed before it:
//! ```text
//! exit  target  terminal  progress   leaves: exit codes and the one failure
//!                                    reporter; TARGET; the local terminal; cp's bar
//! context  api  output               what commands share: the Context; VM paths
//!                                    and local API errors; JSON, tables, stdout
//! session                            a Session with an agent: direct or via guestcommd
//! guest/                             the Guest trait: Direct and Daemon, chosen once
//! commands/                          one module per subcommand
//! ```

mod api;
mod commands;
mod context;
mod exit;
mod guest;
mod output;
mod progress;
mod session;
mod target;
mod terminal;

use std::path::Path;
use std::process::ExitCode;

use clap::{Args as _, FromArgMatches as _, Parser, Subcommand};

use crate::context::{Context, Output};
use crate::exit::Failure;

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
    // The API connection (global options).
    #[command(flatten)]
    pub(crate) api: ApiArgs,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

// The API connection: global options of every command. No doc comment on
// purpose: derive(Args) would make it the about text of `Cli`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
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
    pub(crate) api: Option<String>,

    /// With a tcp:// API: this client's certificate (PEM); guestcommd maps
    /// its fingerprint to a role.
    #[arg(long, global = true, env = "GUESTCOMM_API_CERT", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_key", "api_ca"])]
    pub(crate) api_cert: Option<std::path::PathBuf>,

    /// With a tcp:// API: the private key of --api-cert (PEM).
    #[arg(long, global = true, env = "GUESTCOMM_API_KEY", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_cert", "api_ca"])]
    pub(crate) api_key: Option<std::path::PathBuf>,

    /// With a tcp:// API: the CA that signed guestcommd's certificate (PEM;
    /// the certificate must name the IP address dialled).
    #[arg(long, global = true, env = "GUESTCOMM_API_CA", value_name = "FILE",
          help_heading = "API connection", requires_all = ["api_cert", "api_key"])]
    pub(crate) api_ca: Option<std::path::PathBuf>,
}

/// Parses this process's command line, as `Cli::parse` would.
///
/// Building the whole grammar (every subcommand's arguments) was a third of
/// the instructions `guestcomm exec` ran before its first connect. So the
/// command line is first parsed by a grammar of `exec` and the global
/// options alone, which accepts a subset of what the whole grammar accepts
/// and gives the same `Cli`; anything else it refuses (another command,
/// help, a mistake) is parsed again by the whole grammar, so every message
/// stays the one it was. `--version` is answered by the small grammar, with
/// the same name and version.
pub fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match exec_grammar().try_get_matches_from(&args) {
        Ok(matches) => {
            if let Ok(cli) = Cli::from_arg_matches(&matches) {
                return cli;
            }
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => e.exit(),
        Err(_) => {}
    }
    Cli::parse_from(args)
}

/// The grammar of `guestcomm [API OPTIONS] exec ...`: the same name,
/// version, global options and `exec` arguments as [`Cli`], no other
/// command.
fn exec_grammar() -> clap::Command {
    let exec = commands::exec::ExecArgs::augment_args(clap::Command::new("exec"));
    ApiArgs::augment_args(clap::Command::new("guestcomm").version(env!("CARGO_PKG_VERSION")))
        .subcommand(exec)
        .subcommand_required(true)
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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

impl Command {
    /// The command's `--identity` (commands that reach an agent).
    fn identity(&self) -> Option<&Path> {
        match self {
            Command::Exec(args) => args.identity.as_deref(),
            Command::Cp(args) => args.identity.as_deref(),
            Command::Info(args) => args.to.identity.as_deref(),
            Command::Time(args) => args.to.identity.as_deref(),
            Command::Shutdown(args) => args.to.identity.as_deref(),
            Command::Kvp(args) => args.command.on().to.identity.as_deref(),
            Command::Fs(args) => args.command.on().to.identity.as_deref(),
            Command::Identity(_)
            | Command::Vm(_)
            | Command::Service(_)
            | Command::Status(_)
            | Command::Connect(_)
            | Command::Audit(_)
            | Command::Policy(_)
            | Command::Cim(_) => None,
        }
    }

    /// How the command prints its results (`--json`).
    fn output(&self) -> Output {
        let json = match self {
            Command::Cp(args) => args.json,
            Command::Info(args) => args.json,
            Command::Time(args) => args.json,
            Command::Status(args) => args.json,
            Command::Audit(args) => args.json,
            Command::Kvp(args) => args.command.json(),
            Command::Fs(args) => args.command.on().json,
            Command::Cim(args) => args.command.json(),
            Command::Vm(args) => args.command.json(),
            Command::Service(args) => args.command.json(),
            Command::Policy(args) => args.command.json(),
            Command::Exec(_)
            | Command::Identity(_)
            | Command::Shutdown(_)
            | Command::Connect(_) => false,
        };
        if json {
            Output::Json
        } else {
            Output::Text
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        Command::Identity(args) => {
            return commands::identity::run(args).unwrap_or_else(Failure::report)
        }
        command => command,
    };
    let tls = match (cli.api.api_cert, cli.api.api_key, cli.api.api_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(guestcomm_api::tls::ClientTlsFiles { cert, key, ca })
        }
        _ => None,
    };
    let ctx = Context::new(
        cli.api.api,
        tls,
        command.identity().map(Path::to_path_buf),
        command.output(),
    );
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
            let e = anyhow::Error::new(e).context("failed to start the async runtime");
            return Failure::guestcomm(&e).report();
        }
    };
    // A copy's file work runs on blocking threads that remove their
    // temporary files when interrupted: let them finish.
    let wait_for_blocking = matches!(command, Command::Cp(_));
    let result = runtime.block_on(async {
        let ctx = &ctx;
        match command {
            Command::Exec(args) => commands::exec::run(args, ctx).await,
            Command::Identity(args) => commands::identity::run(args),
            Command::Vm(args) => commands::vm::run(args, ctx).await,
            Command::Service(args) => commands::service::run(args, ctx).await,
            Command::Status(args) => commands::status::run(args, ctx).await,
            Command::Connect(args) => commands::connect::run(args, ctx).await,
            Command::Cp(args) => commands::cp::run(args, ctx).await,
            Command::Info(args) => commands::info::run(args, ctx).await,
            Command::Time(args) => commands::time::run(args, ctx).await,
            Command::Kvp(args) => commands::kvp::run(args, ctx).await,
            Command::Shutdown(args) => commands::shutdown::run(args, ctx).await,
            Command::Fs(args) => commands::fs::run(args, ctx).await,
            Command::Audit(args) => commands::audit::run(args, ctx).await,
            Command::Policy(args) => commands::policy::run(args, ctx).await,
            Command::Cim(args) => commands::cim::run(args, ctx).await,
        }
    });
    let code = result.unwrap_or_else(Failure::report);
    if wait_for_blocking {
        runtime.shutdown_timeout(COPY_CLEANUP_WAIT);
    } else {
        // Stdin is read on a blocking thread that may sit in read(2)
        // forever; do not wait for it.
        runtime.shutdown_background();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Command {
        let args = std::iter::once("guestcomm").chain(args.iter().copied());
        Cli::try_parse_from(args).unwrap().command
    }

    #[test]
    fn the_exec_grammar_gives_what_the_whole_grammar_gives() {
        exec_grammar().debug_assert();
        let lines: [&[&str]; 3] = [
            &["guestcomm", "exec", "unix:///a.sock", "--", "true"],
            &[
                "guestcomm",
                "--api",
                "unix:///api",
                "exec",
                "-n",
                "-t",
                "-e",
                "A=1",
                "-w",
                "/tmp",
                "-u",
                "0",
                "--identity",
                "/k",
                "--timeout",
                "3",
                "web1",
                "--",
                "ls",
                "-l",
            ],
            &[
                "guestcomm",
                "exec",
                "--api-cert",
                "c",
                "--api-key",
                "k",
                "--api-ca",
                "a",
                "web1",
                "--",
                "sh",
                "-c",
                "echo -- --help",
            ],
        ];
        for line in lines {
            let matches = exec_grammar().try_get_matches_from(line).unwrap();
            let small = Cli::from_arg_matches(&matches).unwrap();
            let whole = Cli::try_parse_from(line).unwrap();
            assert_eq!(format!("{small:?}"), format!("{whole:?}"), "{line:?}");
        }
        // Everything else goes to the whole grammar and its messages.
        for line in [
            &["guestcomm", "vm", "list"][..],
            &["guestcomm", "exec", "--help"],
            &["guestcomm", "help", "exec"],
            &["guestcomm", "exec", "-e", "A", "web1", "--", "true"],
            &["guestcomm"],
        ] {
            assert!(
                exec_grammar().try_get_matches_from(line).is_err(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn each_command_gives_its_identity_and_output_to_the_context() {
        let kvp = command(&[
            "kvp",
            "list",
            "unix:///a.sock",
            "--json",
            "--identity",
            "/k",
        ]);
        assert_eq!(kvp.identity(), Some(Path::new("/k")));
        assert_eq!(kvp.output(), Output::Json);
        let exec = command(&["exec", "--identity", "/e", "web1", "--", "true"]);
        assert_eq!(exec.identity(), Some(Path::new("/e")));
        assert_eq!(exec.output(), Output::Text);
        let fs = command(&["fs", "status", "web1", "--json"]);
        assert_eq!((fs.identity(), fs.output()), (None, Output::Json));
        assert_eq!(
            command(&["vm", "show", "web1", "--json"]).output(),
            Output::Json
        );
        assert_eq!(command(&["vm", "list"]).output(), Output::Text);
        assert_eq!(command(&["cim", "classes"]).output(), Output::Text);
        assert_eq!(
            command(&["cim", "get", "P", "--json"]).output(),
            Output::Json
        );
        assert_eq!(
            command(&["policy", "show", "web1", "--json"]).output(),
            Output::Json
        );
        assert_eq!(
            command(&["service", "list", "--json"]).output(),
            Output::Json
        );
    }
}
