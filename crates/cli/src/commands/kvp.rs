//! `guestcomm kvp set|get|list|rm TARGET ...`: the key-value pools of a VM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::{encode_path_segment, KvpEntries, KvpPair, KvpValue, KvpWrite, Method};
use guestcomm_client::integration as ops;
use guestcomm_protocol::integration::{check_key, check_value, KvpPool};
use guestcomm_protocol::message::Call;
use guestcomm_protocol::text::Escaped;

use super::guest::{self, GuestTarget, Via};

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
pub struct KvpArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KvpCommand,
}

/// Where and how a key-value command goes.
#[derive(Debug, Args)]
pub struct KvpTarget {
    /// Target and key.
    #[command(flatten)]
    pub to: GuestTarget,
    /// The pool: external (0), guest (1) or auto (2).
    #[arg(long, default_value = "external")]
    pub pool: KvpPool,
}

/// The `kvp` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvpCommand {
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
enum Output {
    Value(String),
    Entries(KvpEntries),
    Written(Option<String>),
}

async fn execute(cmd: KvpCommand, api: Option<&str>) -> anyhow::Result<(Output, bool)> {
    let (on, json) = match &cmd {
        KvpCommand::Set { on, key, value } => {
            check_key(key)?;
            check_value(value)?;
            (on, false)
        }
        KvpCommand::Get { on, key } | KvpCommand::Rm { on, key } => {
            check_key(key)?;
            (on, false)
        }
        KvpCommand::List { on, json } => (on, *json),
    };
    let pool = on.pool;
    let output = match guest::via(&on.to.target, api, on.to.identity.as_deref())? {
        Via::Direct(addr) => {
            let session = guest::direct(addr, on.to.identity.as_deref()).await?;
            match cmd {
                KvpCommand::Get { key, .. } => {
                    Output::Value(ops::kvp_get(session, pool, &key).await?)
                }
                KvpCommand::List { .. } => Output::Entries(ops::kvp_list(session, pool).await?),
                KvpCommand::Set { key, value, .. } => {
                    ops::kvp_change(session, Call::KvpSet { pool, key, value }).await?;
                    Output::Written(None)
                }
                KvpCommand::Rm { key, .. } => {
                    ops::kvp_change(session, Call::KvpDelete { pool, key }).await?;
                    Output::Written(None)
                }
            }
        }
        Via::Daemon { client, vm_path } => {
            let base = format!("{vm_path}/kvp/{pool}");
            let at = |key: &str| format!("{base}/{}", encode_path_segment(key));
            let answer = match cmd {
                KvpCommand::Get { key, .. } => client
                    .get::<KvpPair>(&at(&key))
                    .await
                    .map(|p| Output::Value(p.value)),
                KvpCommand::List { .. } => client.get(&base).await.map(Output::Entries),
                KvpCommand::Set { key, value, .. } => client
                    .send::<_, KvpWrite>(Method::PUT, &at(&key), &KvpValue { value })
                    .await
                    .map(|w| Output::Written(w.pending_reason)),
                KvpCommand::Rm { key, .. } => client
                    .send::<_, KvpWrite>(Method::DELETE, &at(&key), &())
                    .await
                    .map(|w| Output::Written(w.pending_reason)),
            };
            answer.map_err(guest::api_error)?
        }
    };
    Ok((output, json))
}

/// Runs `guestcomm kvp`.
pub async fn run(args: KvpArgs, api: Option<&str>) -> ExitCode {
    match execute(args.command, api).await {
        // The value as it is for a script; escaped on a terminal, where a
        // guest's value could otherwise move the cursor or retitle it.
        Ok((Output::Value(v), _)) if std::io::stdout().is_terminal() => {
            println!("{}", Escaped(&v))
        }
        Ok((Output::Value(v), _)) => println!("{v}"),
        Ok((Output::Entries(e), true)) => return super::api::print_json(&e),
        // One line per key: escaped, so no value can forge a line.
        Ok((Output::Entries(e), false)) => {
            return guest::write_out(
                &e.iter()
                    .map(|(k, v)| format!("{}={}\n", Escaped(k), Escaped(v)))
                    .collect::<String>(),
            )
        }
        Ok((Output::Written(None), _)) => {}
        Ok((Output::Written(Some(reason)), _)) => {
            eprintln!(
                "guestcomm: stored; the guest gets it when its agent next answers ({})",
                Escaped(&reason)
            );
        }
        Err(e) => return guest::fail(&e),
    }
    ExitCode::SUCCESS
}
