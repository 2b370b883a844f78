//! `commissaire-service NAME`: one kind of worker as its own process. All logic lives in the
//! library (`commissaire_server::service`).

use clap::Parser;
use commissaire_server::config::normalize_args;
use commissaire_server::service::{ServiceCli, ServiceConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ServiceCli::parse_from(normalize_args(std::env::args()));
    let cfg = match ServiceConfig::load(cli).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("commissaire-service: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match commissaire_server::service::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commissaire-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
