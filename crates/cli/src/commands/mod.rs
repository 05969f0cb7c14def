//! One module per subcommand: its clap arguments (doc comments are the
//! help) and what it does, given the [`crate::context::Context`]. Each
//! `run` returns the exit code of success or a [`crate::exit::Failure`].

pub(crate) mod audit;
pub(crate) mod cim;
pub(crate) mod connect;
pub(crate) mod cp;
pub(crate) mod exec;
pub(crate) mod fs;
pub(crate) mod identity;
pub(crate) mod info;
pub(crate) mod kvp;
pub(crate) mod policy;
pub(crate) mod service;
pub(crate) mod shutdown;
pub(crate) mod status;
pub(crate) mod time;
pub(crate) mod vm;

use crate::target::Target;

/// The TARGET of an integration-service command and its key.
#[derive(Debug, clap::Args)]
pub(crate) struct GuestTarget {
    /// The guest agent's address (see `guestcomm --help`) or a VM name.
    #[arg(value_name = "TARGET")]
    pub(crate) target: Target,
    /// Key file shared with the agent (agent addresses only; guestcommd
    /// holds the keys of its VMs).
    #[arg(long, env = "GUESTCOMM_IDENTITY", value_name = "FILE")]
    pub(crate) identity: Option<std::path::PathBuf>,
}
