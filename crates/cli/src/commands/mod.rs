//! One module per subcommand: its clap arguments and what it does.

pub mod cp;
pub mod exec;
