//! `guestcomm policy show|set VM`: a VM's argument-level policy, enforced by
//! guestcommd on every exec and copy (the document format is in
//! `guestcomm_policy` and docs/SECURITY.md).

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::{ApiErrorCode, Method, SetVmPolicy};
use guestcomm_policy::{PolicyDocument, MAX_POLICY_BYTES};

use crate::api;
use crate::context::Context;
use crate::exit::Failure;
use crate::output;

/// Show or set a VM's argument-level policy: which programs exec may run
/// (as whom, with which arguments and environment variables), which guest
/// paths cp may write or read, or read-only.
///
/// The document is TOML (or JSON), for example:
///
///   [exec]
///   env = ["LANG", "APP_*"]
///   allow = [{ program = "/usr/bin/uptime", args = [] }, { program = "/opt/app/*", user = "app" }]
///   [cp]
///   to_guest = ["/srv/incoming"]
///   from_guest = ["/var/log"]
///
/// Loader and interpreter variables (LD_*, PATH, PYTHON*, ...) pass only
/// when a policy names them exactly (docs/SECURITY.md). A request passes
/// only if the host's policy and the agent's own (`guestcomm-agent
/// --policy`) both allow it.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: PolicyCommand,
}

/// The `policy` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print a VM's policy (TOML, or JSON with --json).
    Show {
        /// The VM.
        vm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a VM's policy with a document (an empty one lifts every
    /// restriction); a malformed document is refused naming its line and the
    /// old policy stays (needs the admin role).
    Set {
        /// The VM.
        vm: String,
        /// The document: a TOML or JSON file, or - for standard input.
        #[arg(value_name = "FILE|-", default_value = "-")]
        file: String,
    },
}

impl PolicyCommand {
    /// Whether to print JSON (`show --json`).
    pub(crate) fn json(&self) -> bool {
        matches!(self, PolicyCommand::Show { json: true, .. })
    }
}

/// Reads the document, at most [`MAX_POLICY_BYTES`] (one more is read to
/// tell a file that is too large).
fn read_document(file: &str) -> Result<String, String> {
    let mut text = String::new();
    let limit = MAX_POLICY_BYTES as u64 + 1;
    let read = if file == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    let name = if file == "-" { "standard input" } else { file };
    read.map_err(|e| format!("cannot read the policy from {name}: {e}"))?;
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "the policy in {name} is over the {MAX_POLICY_BYTES}-byte limit"
        ));
    }
    Ok(text)
}

/// Runs `guestcomm policy ...`.
pub(crate) async fn run(args: PolicyArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let client = ctx.api()?;
    match args.command {
        PolicyCommand::Show { vm, .. } => {
            let path = format!("{}/policy", api::vm_path(&vm)?);
            let doc: PolicyDocument = client.get(&path).await?;
            if ctx.json() {
                return output::print_json(&doc);
            }
            let text = doc.to_toml();
            if text.trim().is_empty() || doc == PolicyDocument::default() {
                println!("# no restriction");
            } else {
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Set { vm, file } => {
            let path = format!("{}/policy", api::vm_path(&vm)?);
            let document = read_document(&file)
                .map_err(|e| api::local_error(400, ApiErrorCode::InvalidArgument, e))?;
            let _: PolicyDocument = client
                .send(Method::PUT, &path, &SetVmPolicy { document })
                .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
