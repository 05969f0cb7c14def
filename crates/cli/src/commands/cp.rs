//! `guestcomm cp SRC TARGET:DST` and `guestcomm cp TARGET:SRC DST`: copy
//! files and trees into and out of a guest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use guestcomm_client::{parse_size, CopyError, ReceiveOptions};
use guestcomm_protocol::files::{CopyFromGuest, CopySummary, CopyToGuest};
use guestcomm_protocol::limits::DEFAULT_COPY_IDLE_TIMEOUT_MS;
use guestcomm_transport::Address;
use tokio::signal::unix::{signal, SignalKind};

use crate::context::Context;
use crate::exit::Failure;
use crate::guest;
use crate::progress::CopyProgress;
use crate::target::Target;

/// The exit codes of `cp`, for `--help`.
const CP_HELP: &str = "\
TARGET:PATH names a path in the guest. TARGET is a transport address
(see `guestcomm --help`); the guest PATH must be absolute, and TARGET ends
at the first ':/' after the address's '://' that leaves a valid address:
  unix:///run/agent.sock:/tmp/x   vsock://3:18243:/tmp/x   vsock://3:/tmp/x
  tcp://127.0.0.1:5000:/tmp/x     hvsock-uds:///run/fc.vsock?port=18243:/x
(a Unix socket path that itself contains ':/' cannot be used: link it
elsewhere). NAME:PATH, with no '/' before the ':', names a VM, which needs
the guestcommd daemon. A local path containing ':' is written with a '/'
before it, e.g. ./a:b.

Exit status of `cp`:
  0    copied
  1    the copy failed: source missing, destination exists (no --force),
       missing parent (no --create-full-path), directory without -r,
       permission denied, disk full, checksum or size mismatch, an entry
       refused; the old destination is untouched, no temporary file is left
       (with --resume, partial files are kept for the next attempt)
  2    invalid command line
  125  guestcomm failed (cannot connect, handshake refused, protocol error,
       connection lost, or the copy stalled: the other side sent or took
       nothing for --idle-timeout seconds)
  130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM, 129 by SIGHUP:
       nothing partial is kept, no temporary file is left (with --resume,
       partial files are kept and the same command continues them)";

/// Copy a file or directory tree into the guest or out of it.
///
/// Host to guest: `cp SRC TARGET:DST`; guest to host: `cp TARGET:SRC DST`.
/// When DST is an existing directory, SRC lands in it under its own name.
/// Every file is written to a temporary file beside its destination,
/// checked against the sender's BLAKE3, synced and renamed into place; file
/// mode (permission bits) and modification time are kept. Symlinks inside
/// a tree are copied as symlinks; FIFOs and device files are refused.
#[derive(Debug, Args)]
#[command(after_help = CP_HELP)]
pub(crate) struct CpArgs {
    /// Create missing parent directories of DST (CreateFullPath).
    #[arg(long)]
    pub(crate) create_full_path: bool,

    /// Overwrite existing files (OverwriteExisting).
    #[arg(short = 'f', long)]
    pub(crate) force: bool,

    /// Copy directories recursively.
    #[arg(short = 'r', visible_short_alias = 'R', long)]
    pub(crate) recursive: bool,

    /// Keep partial files when interrupted, and continue them: a file whose
    /// partial copy exists at the destination is sent from where it ends,
    /// after its BLAKE3 is checked against the source's start.
    #[arg(long)]
    pub(crate) resume: bool,

    /// Give copied entries the numeric owner and group they have at the
    /// source (as `cp -p` as root). The receiving side must run as root:
    /// the agent for a copy into the guest, this command for a copy out.
    /// Set-user-ID, set-group-ID and sticky bits are never copied.
    #[arg(long)]
    pub(crate) preserve_owner: bool,

    /// Key file shared with the agent (`guestcomm identity new`), for an
    /// agent address whose agent has --credentials. VMs known to guestcommd
    /// need none: the daemon holds their keys.
    #[arg(long, env = "GUESTCOMM_IDENTITY", value_name = "FILE")]
    pub(crate) identity: Option<std::path::PathBuf>,

    /// Print a JSON summary (bytes, files, seconds, blake3) on stdout.
    #[arg(long)]
    pub(crate) json: bool,

    /// Fail the copy as stalled (exit 125) when the other side sends
    /// nothing, or takes nothing and does not answer, for this many seconds.
    /// Raise it for very slow links, or for resuming a file whose partial
    /// copy takes longer than this to hash.
    #[arg(long, env = "GUESTCOMM_COPY_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = DEFAULT_COPY_IDLE_TIMEOUT_MS / 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) idle_timeout: u64,

    /// Most bytes of file content a copy out of the guest may put on this
    /// side's disk, e.g. 10GiB or 500MB (the total of its files' declared
    /// sizes): a file that would pass it is refused before any of its bytes
    /// land, and the copy fails. A copy into the guest is bounded by the
    /// agent's --max-copy-bytes instead. Default: no bound but the disk's.
    #[arg(long, env = "GUESTCOMM_COPY_MAX_BYTES", value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_bytes: Option<u64>,

    /// A local path, or TARGET:PATH in the guest.
    #[arg(value_name = "SRC")]
    pub(crate) src: String,

    /// A local path, or TARGET:PATH in the guest.
    #[arg(value_name = "DST")]
    pub(crate) dst: String,
}

/// One side of a copy, as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A local path.
    Local(PathBuf),
    /// A path in a guest.
    Remote {
        /// The guest.
        target: Target,
        /// The path in the guest.
        path: String,
    },
}

/// Parses SRC or DST (the rule is in `cp --help`).
pub(crate) fn parse_location(arg: &str) -> Result<Location, String> {
    if let Some(scheme) = arg.find("://") {
        let mut from = scheme + 3;
        while let Some(i) = arg[from..].find(":/") {
            let at = from + i;
            if let Ok(addr) = arg[..at].parse::<Address>() {
                return Ok(Location::Remote {
                    target: Target::Direct(addr),
                    path: arg[at + 1..].to_string(),
                });
            }
            from = at + 1;
        }
        return Err(format!(
            "{arg:?} is not ADDRESS:/ABSOLUTE/PATH (e.g. unix:///run/agent.sock:/tmp/file); see `guestcomm cp --help`"
        ));
    }
    match arg.find(':') {
        Some(i) if i > 0 && !arg[..i].contains('/') => Ok(Location::Remote {
            target: Target::Vm(arg[..i].to_string()),
            path: arg[i + 1..].to_string(),
        }),
        _ => Ok(Location::Local(PathBuf::from(arg))),
    }
}

/// Which way the bytes go.
enum Plan {
    ToGuest {
        src: PathBuf,
        target: Target,
        dst: String,
    },
    FromGuest {
        target: Target,
        src: String,
        dst: PathBuf,
    },
}

impl CpArgs {
    fn plan(&self) -> Result<Plan, String> {
        match (parse_location(&self.src)?, parse_location(&self.dst)?) {
            (Location::Local(_), Location::Remote { .. }) if self.max_bytes.is_some() => Err(
                "--max-bytes bounds what this side receives, a copy out of a guest; a copy into a guest is bounded by its agent's --max-copy-bytes".into(),
            ),
            (Location::Local(src), Location::Remote { target, path }) => Ok(Plan::ToGuest {
                src,
                target,
                dst: path,
            }),
            (Location::Remote { target, path }, Location::Local(dst)) => Ok(Plan::FromGuest {
                target,
                src: path,
                dst,
            }),
            (Location::Local(_), Location::Local(_)) => {
                Err("neither SRC nor DST is in a guest: write one of them as TARGET:PATH".into())
            }
            (Location::Remote { .. }, Location::Remote { .. }) => Err(
                "copying from one guest to another is not supported: copy through the host".into(),
            ),
        }
    }

    fn receive_options(&self) -> ReceiveOptions {
        ReceiveOptions {
            overwrite: self.force,
            create_full_path: self.create_full_path,
            recursive: self.recursive,
            resume: self.resume,
            preserve_owner: self.preserve_owner,
            max_bytes: self.max_bytes,
        }
    }
}

async fn open(
    target: &Target,
    ctx: &Context,
) -> Result<guestcomm_client::Session<crate::session::AgentStream>, Failure> {
    async { guest::connect(target, ctx)?.open(None).await }
        .await
        .map_err(|e| Failure::guestcomm(&e))
}

/// Runs `guestcomm cp`.
pub(crate) async fn run(args: CpArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let plan = args.plan().map_err(Failure::usage)?;
    let started = Instant::now();
    let (direction, src_text, dst_text) = (
        if matches!(plan, Plan::ToGuest { .. }) {
            "to_guest"
        } else {
            "from_guest"
        },
        args.src.clone(),
        args.dst.clone(),
    );
    // Dropping the copy on a signal ends its file work, which removes the
    // temporary file (or keeps the partial one with --resume); `run` in lib.rs
    // waits for that before the process exits.
    let summary = tokio::select! {
        result = copy(plan, &args, ctx) => result?,
        signal = terminating() => return Err(Failure::interrupted(signal, args.resume)),
    };
    if ctx.json() {
        let json = serde_json::json!({
            "direction": direction,
            "src": src_text,
            "dst": dst_text,
            "files": summary.files,
            "dirs": summary.dirs,
            "symlinks": summary.symlinks,
            "bytes": summary.bytes,
            "seconds": started.elapsed().as_secs_f64(),
            "blake3": summary.blake3,
            "resumed_bytes": summary.resumed_bytes,
        });
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The first of SIGINT, SIGTERM and SIGHUP to arrive. A signal whose
/// handler cannot be installed keeps its default action.
async fn terminating() -> libc::c_int {
    let wait = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        kind.as_raw_value()
    };
    tokio::select! {
        n = wait(SignalKind::interrupt()) => n,
        n = wait(SignalKind::terminate()) => n,
        n = wait(SignalKind::hangup()) => n,
    }
}

async fn copy(plan: Plan, args: &CpArgs, ctx: &Context) -> Result<CopySummary, Failure> {
    let idle = Duration::from_secs(args.idle_timeout);
    match plan {
        Plan::ToGuest { src, target, dst } => {
            let total = local_total(&src, args.recursive).map_err(|e| Failure::copy(&e))?;
            let session = open(&target, ctx).await?;
            let req = CopyToGuest {
                dst,
                overwrite: args.force,
                create_full_path: args.create_full_path,
                recursive: args.recursive,
                resume: args.resume,
                preserve_owner: args.preserve_owner,
                // guestcommd fills in its host policy's.
                host_prefixes: None,
            };
            let mut progress = CopyProgress::new(total);
            let result =
                guestcomm_client::copy_to_guest(session.conn, &src, req, idle, &mut progress).await;
            progress.finish();
            result.map_err(|e| Failure::copy(&e))
        }
        Plan::FromGuest { target, src, dst } => {
            let opts = args.receive_options();
            guestcomm_client::check_destination(&dst, opts).map_err(|e| Failure::copy(&e))?;
            let session = open(&target, ctx).await?;
            let req = CopyFromGuest {
                src,
                recursive: args.recursive,
                resume: args.resume,
                host_prefixes: None,
            };
            let mut progress = CopyProgress::new(None);
            let result = guestcomm_client::copy_from_guest(
                session.conn,
                req,
                &dst,
                opts,
                idle,
                &mut progress,
            )
            .await;
            progress.finish();
            result.map_err(|e| Failure::copy(&e))
        }
    }
}

/// Checks the local source before connecting; its size when it is one file.
fn local_total(src: &Path, recursive: bool) -> Result<Option<u64>, CopyError> {
    let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CopyError::SourceNotFound(src.into()),
        _ => CopyError::fs("read", src, e),
    })?;
    if meta.is_dir() && !recursive {
        return Err(CopyError::IsADirectory(src.into()));
    }
    Ok(meta.is_file().then_some(meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(arg: &str) -> (String, String) {
        match parse_location(arg).unwrap() {
            Location::Remote {
                target: Target::Direct(addr),
                path,
            } => (addr.to_string(), path),
            other => panic!("{arg}: {other:?}"),
        }
    }

    #[test]
    fn target_ends_at_the_first_colon_slash_leaving_a_valid_address() {
        assert_eq!(
            remote("unix:///tmp/a.sock:/dst/x"),
            ("unix:///tmp/a.sock".into(), "/dst/x".into())
        );
        assert_eq!(remote("vsock://3:18243:/tmp/x").1, "/tmp/x");
        assert_eq!(remote("vsock://3:/tmp/x").1, "/tmp/x");
        assert_eq!(remote("tcp://[::1]:5000:/a:/b").1, "/a:/b");
        assert_eq!(
            remote("hvsock-uds:///run/fc.vsock?port=18243:/x"),
            ("hvsock-uds:///run/fc.vsock?port=18243".into(), "/x".into())
        );
        assert!(parse_location("unix:///tmp/a.sock:rel").is_err());
        assert!(parse_location("vsock://3:18243").is_err());
    }

    #[test]
    fn names_and_local_paths() {
        assert_eq!(
            parse_location("vm1:/tmp").unwrap(),
            Location::Remote {
                target: Target::Vm("vm1".into()),
                path: "/tmp".into()
            }
        );
        assert_eq!(
            parse_location("./a:b").unwrap(),
            Location::Local("./a:b".into())
        );
        assert_eq!(
            parse_location("/x/y").unwrap(),
            Location::Local("/x/y".into())
        );
    }
}
