//! `guestcomm`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    if guestcomm_generate::requested() {
        return guestcomm_generate::main(guestcomm_cli::Cli::command(), "1");
    }
    guestcomm_cli::run(guestcomm_cli::parse())
}
