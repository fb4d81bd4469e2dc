use std::process::ExitCode;

use clap::Parser;
use credential_ledger::config::Cli;
use credential_ledger::{cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Cli::parse();
    telemetry::init(arguments.log_format);
    match cli::run(arguments.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
