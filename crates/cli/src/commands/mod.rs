//! One module per subcommand: its clap arguments and what it does.

pub mod api;
pub mod audit;
pub mod connect;
pub mod cp;
pub mod exec;
pub mod identity;
pub mod policy;
pub mod service;
pub mod status;
pub mod vm;
