use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = deploybot::cli::Cli::parse();
    deploybot::cli::main(cli)
}
