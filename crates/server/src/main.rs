//! `commissaire-server`: the REST server binary. All logic lives in the library.

use clap::Parser;
use commissaire_server::config::{Cli, Config, normalize_args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    let cfg = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("commissaire-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match commissaire_server::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commissaire-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
