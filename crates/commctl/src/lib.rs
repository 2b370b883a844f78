//! commctl: the Commissaire operator CLI. The library holds everything so that it can be
//! tested directly; `main.rs` only parses the command line and sets the exit code.
//!
//! Exit codes: 0 success, 1 error, 2 usage error, 3 not found (see [`error`]).
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod userdata;

use std::process::ExitCode;

use clap::Parser;

/// Parses the process's arguments, runs the command and returns the exit code.
pub fn main_entry() -> ExitCode {
    // reqwest is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        // Help and --version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("commctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
