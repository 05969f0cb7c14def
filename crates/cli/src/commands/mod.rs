//! One module per subcommand: its clap arguments and what it does.

pub mod api;
pub mod audit;
pub mod cim;
pub mod connect;
pub mod cp;
pub mod exec;
pub mod fs;
pub mod guest;
pub mod identity;
pub mod info;
pub mod kvp;
pub mod policy;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod time;
pub mod vm;
