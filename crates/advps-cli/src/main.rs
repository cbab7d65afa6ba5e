//! `advps`: the one binary of the ADVPS API server. `advps serve` runs the
//! API; the other subcommands let operators manage accounts, API keys and
//! products in the same data directory, with or without a running server.

mod cli;
mod commands;
mod live_admin;
mod operate;

use std::process::ExitCode;

use clap::Parser;

/// The server allocates a little for every request on every worker thread;
/// glibc's allocator serialises those threads on its arena locks and showed
/// as the largest cost of an authenticated request under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
