//! `commctl`: the Commissaire operator CLI.
//!
//! Local commands so far: `user-data` (cloud-init user-data that makes a new host register
//! itself) and `passhash` (bcrypt hashes for the server's users file).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use commctl::userdata::{self, HostData};

/// The Commissaire operator CLI.
#[derive(Parser)]
#[command(name = "commctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write cloud-init user-data that registers a new host with Commissaire at first boot.
    #[command(name = "user-data")]
    UserData {
        /// Commissaire server URL the host calls, e.g. https://commissaire.example.com:8000.
        #[arg(short = 'e', long)]
        endpoint: String,
        /// Cluster the host joins.
        #[arg(short = 'c', long)]
        cluster: Option<String>,
        /// User for HTTP basic authentication.
        #[arg(short = 'u', long)]
        username: Option<String>,
        /// Ask for the password (stored in the user-data: protect the file).
        #[arg(short = 'p', long)]
        password: bool,
        /// User the server logs in as over SSH.
        #[arg(short = 'r', long, default_value = "root")]
        remote_user: String,
        /// Private key path on the host (created if missing).
        #[arg(short = 's', long)]
        ssh_key_path: Option<String>,
        /// authorized_keys path on the host.
        #[arg(short = 'a', long)]
        authorized_keys_path: Option<String>,
        /// File whose content replaces the default cloud-config part.
        #[arg(short = 'C', long)]
        cloud_init: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long)]
        outfile: Option<PathBuf>,
    },
    /// Print the bcrypt hash of a password, for the server's users file.
    Passhash {
        /// The password (prompted for when neither -p nor -f is given).
        #[arg(short = 'p', long)]
        password: Option<String>,
        /// Read the password from a file (`-` for standard input).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// bcrypt cost (4-31).
        #[arg(short = 'r', long, default_value_t = 12)]
        rounds: u32,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::UserData {
            endpoint,
            cluster,
            username,
            password,
            remote_user,
            ssh_key_path,
            authorized_keys_path,
            cloud_init,
            outfile,
        } => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("--endpoint {endpoint:?} must be an http:// or https:// URL");
            }
            let password = if password {
                Some(rpassword::prompt_password("Password: ").context("reading the password")?)
            } else {
                None
            };
            let cloud_config = match cloud_init {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading --cloud-init file {}", p.display()))?,
                ),
                None => None,
            };
            let doc = userdata::build(
                &HostData {
                    endpoint: endpoint.trim_end_matches('/').to_string(),
                    username,
                    password,
                    cluster,
                    remote_user,
                    ssh_key_path,
                    authorized_keys_path,
                },
                cloud_config.as_deref(),
            );
            match outfile {
                Some(p) => {
                    std::fs::write(&p, doc).with_context(|| format!("writing {}", p.display()))?
                }
                None => std::io::stdout().write_all(doc.as_bytes())?,
            }
        }
        Command::Passhash {
            password,
            file,
            rounds,
        } => {
            if !(4..=31).contains(&rounds) {
                bail!("--rounds {rounds}: bcrypt cost must be 4 to 31");
            }
            let pw = match (password, file) {
                (Some(p), _) => p,
                (None, Some(f)) if f.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                (None, None) => rpassword::prompt_password("Password: ")?,
            };
            println!("{}", bcrypt::hash(pw, rounds)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
