//! `guestcomm`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    guestcomm_cli::run(guestcomm_cli::Cli::parse())
}
