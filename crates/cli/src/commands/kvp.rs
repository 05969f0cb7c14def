//! `guestcomm kvp set|get|list|rm TARGET ...`: the key-value pools of a VM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::KvpEntries;
use guestcomm_protocol::integration::{check_key, check_value, KvpPool};
use guestcomm_protocol::text::Escaped;

use super::GuestTarget;
use crate::context::Context;
use crate::exit::Failure;
use crate::{guest, output};

const KVP_HELP: &str = "\
Pools, as Hyper-V's: external (0) the host writes and guest programs read
(`guestcomm-agent kvp get KEY` in the guest); guest (1) guest programs write
(`guestcomm-agent kvp set KEY VALUE`) and the host reads; auto (2) the agent
fills with the guest's OS, kernel, FQDN, addresses and agent version.
Keys up to 512 bytes, values up to 2,048 bytes of UTF-8, 128 keys per pool.

For a VM name, guestcommd keeps the external pool and delivers it to the
agent now or, if the VM is unreachable, when it next answers. For an agent
address, the value goes to the agent alone.

Exit status: 0 on success, 1 on error (unknown key or pool, over a limit,
read-only pool, unreachable agent, service disabled).";

/// Read and write a VM's key-value pools.
#[derive(Debug, Args)]
#[command(after_help = KVP_HELP)]
pub(crate) struct KvpArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: KvpCommand,
}

/// Where and how a key-value command goes.
#[derive(Debug, Args)]
pub(crate) struct KvpTarget {
    /// Target and key.
    #[command(flatten)]
    pub(crate) to: GuestTarget,
    /// The pool: external (0), guest (1) or auto (2).
    #[arg(long, default_value = "external")]
    pub(crate) pool: KvpPool,
}

/// The `kvp` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KvpCommand {
    /// Write a key of the external pool.
    Set {
        /// Target and pool.
        #[command(flatten)]
        on: KvpTarget,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print one value (exactly when piped; on a terminal with its control
    /// characters escaped, as `list` always does).
    Get {
        /// Target and pool.
        #[command(flatten)]
        on: KvpTarget,
        /// The key.
        key: String,
    },
    /// Print every key of a pool, KEY=VALUE per line.
    #[command(alias = "ls")]
    List {
        /// Target and pool.
        #[command(flatten)]
        on: KvpTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key of the external pool.
    Rm {
        /// Target and pool.
        #[command(flatten)]
        on: KvpTarget,
        /// The key.
        key: String,
    },
}

/// What a command prints.
enum Answer {
    Value(String),
    Entries(KvpEntries),
    Written(Option<String>),
}

impl KvpCommand {
    /// The target and pool of any `kvp` subcommand.
    pub(crate) fn on(&self) -> &KvpTarget {
        match self {
            KvpCommand::Set { on, .. }
            | KvpCommand::Get { on, .. }
            | KvpCommand::List { on, .. }
            | KvpCommand::Rm { on, .. } => on,
        }
    }

    /// Whether to print JSON (`list --json`).
    pub(crate) fn json(&self) -> bool {
        matches!(self, KvpCommand::List { json: true, .. })
    }
}

async fn execute(cmd: KvpCommand, ctx: &Context) -> anyhow::Result<Answer> {
    match &cmd {
        KvpCommand::Set { key, value, .. } => {
            check_key(key)?;
            check_value(value)?;
        }
        KvpCommand::Get { key, .. } | KvpCommand::Rm { key, .. } => check_key(key)?,
        KvpCommand::List { .. } => {}
    }
    let pool = cmd.on().pool;
    let guest = guest::connect(&cmd.on().to.target, ctx)?;
    Ok(match cmd {
        KvpCommand::Get { key, .. } => Answer::Value(guest.kvp_get(pool, &key).await?),
        KvpCommand::List { .. } => Answer::Entries(guest.kvp_list(pool).await?),
        KvpCommand::Set { key, value, .. } => {
            Answer::Written(guest.kvp_set(pool, key, value).await?)
        }
        KvpCommand::Rm { key, .. } => Answer::Written(guest.kvp_remove(pool, key).await?),
    })
}

/// Runs `guestcomm kvp`.
pub(crate) async fn run(args: KvpArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    match execute(args.command, ctx)
        .await
        .map_err(|e| Failure::failed(&e))?
    {
        // The value as it is for a script; escaped on a terminal, where a
        // guest's value could otherwise move the cursor or retitle it.
        Answer::Value(v) if std::io::stdout().is_terminal() => println!("{}", Escaped(&v)),
        Answer::Value(v) => println!("{v}"),
        Answer::Entries(e) if ctx.json() => return output::print_json(&e),
        // One line per key: escaped, so no value can forge a line.
        Answer::Entries(e) => {
            return output::write_out(
                &e.iter()
                    .map(|(k, v)| format!("{}={}\n", Escaped(k), Escaped(v)))
                    .collect::<String>(),
            )
        }
        Answer::Written(None) => {}
        Answer::Written(Some(reason)) => {
            eprintln!(
                "guestcomm: stored; the guest gets it when its agent next answers ({})",
                Escaped(&reason)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
