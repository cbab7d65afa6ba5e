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
/// as the largest cost of an authenticated request under load. jemalloc
/// serves every allocation of the process, SQLite's too, and its background
/// thread gives freed pages back within about a second of a load's end,
/// also when the threads that freed them sleep (its settings are built in:
/// `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
