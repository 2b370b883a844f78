//! `commissaire-manpages DIR`: writes roff man pages for `commctl` (and each of its
//! subcommands, as `commctl-host-ssh.1` and so on), `commissaire-server` and
//! `commissaire-service` into DIR, generated from the same clap definitions the binaries parse
//! with, so the pages never drift from `--help`.
//!
//! ```sh
//! cargo run -p commissaire-manpages -- man/
//! man -l man/commctl.1
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

/// Writes `cmd`'s page as `DIR/<name>.1` and, recursively, one page per subcommand named
/// `<parent>-<sub>.1`. Returns the files written.
fn write_pages(cmd: clap::Command, name: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    // The page's title and the usage line both show the full command path. clap wants a
    // 'static name (its `string` feature is off); this short-lived program leaks a few bytes
    // per page rather than switch the feature on for every crate.
    let title: &'static str = Box::leak(name.to_string().into_boxed_str());
    let cmd = cmd.name(title).bin_name(name.replace('-', " "));
    let mut written = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        written.extend(write_pages(sub.clone(), &sub_name, dir)?);
    }
    Ok(written)
}

/// Writes every page into `dir` (created if missing).
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = write_pages(commctl::cli::Cli::command(), "commctl", dir)?;
    written.extend(write_pages(
        commissaire_server::config::Cli::command(),
        "commissaire-server",
        dir,
    )?);
    written.extend(write_pages(
        commissaire_server::service::ServiceCli::command(),
        "commissaire-service",
        dir,
    )?);
    Ok(written)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [d] if d != "-h" && d != "--help" => PathBuf::from(d),
        _ => {
            eprintln!(
                "usage: commissaire-manpages DIR\n\nWrites the man pages of commctl (one per subcommand), commissaire-server and commissaire-service into DIR."
            );
            return ExitCode::from(2);
        }
    };
    match write_all(&dir) {
        Ok(files) => {
            eprintln!("wrote {} man pages into {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("commissaire-manpages: writing into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_for_every_binary_and_commctl_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(dir.path()).unwrap();
        for name in [
            "commctl.1",
            "commctl-host.1",
            "commctl-host-ssh.1",
            "commctl-cluster-restart-start.1",
            "commissaire-server.1",
            "commissaire-service.1",
        ] {
            let p = dir.path().join(name);
            assert!(files.contains(&p), "{name} missing: {files:?}");
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{name}: {text}"
            );
        }
        let ssh = std::fs::read_to_string(dir.path().join("commctl-host-ssh.1")).unwrap();
        assert!(ssh.contains("insecure"), "{ssh}");
        let server = std::fs::read_to_string(dir.path().join("commissaire-server.1")).unwrap();
        assert!(server.contains("listen"), "{server}");
    }
}
