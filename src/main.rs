use std::process::ExitCode;

use clap::Parser;
use credential_ledger::config::Cli;
use credential_ledger::{cli, telemetry};

// glibc's allocator spent about 15% of the service's time under write load and kept memory in
// per-thread arenas; mimalloc does the same work in less of both (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
