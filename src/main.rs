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
            eprintln!("error: {}", describe(&error));
            match error.downcast_ref::<cli::CouldNotCheck>() {
                Some(_) => ExitCode::from(3),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line, each said once: many errors already quote their
/// source in their own message, and `{:#}` would repeat it after them.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
