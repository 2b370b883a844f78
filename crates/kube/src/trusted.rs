//! The operator's trusted files directory: the only place on the server from which an API
//! request may make the server read a file (container-manager and flannel TLS material named
//! by `*_path` options).
//!
//! Off by default. API users can only *name* a file in it (a plain file name, no path), and
//! reads are limited to regular files (no symlinks, devices or FIFOs) of at most
//! [`MAX_PEM_BYTES`]. Every failure gives the same message, which depends only on the name
//! the caller sent, so nothing about the server's file system can be probed through it.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model::ValidationError;
use model::validate::{MAX_PEM_BYTES, validate_trusted_file_name};

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Sets the process-wide trusted files directory (once, at start-up; later calls are
/// ignored). The directory must exist; it is resolved to its canonical path.
pub fn configure(dir: Option<&Path>) -> Result<(), String> {
    let resolved = match dir {
        None => None,
        Some(d) => {
            let c = d
                .canonicalize()
                .map_err(|e| format!("trusted-files-dir {}: {e}", d.display()))?;
            if !c.is_dir() {
                return Err(format!(
                    "trusted-files-dir {} is not a directory",
                    d.display()
                ));
            }
            Some(c)
        }
    };
    let _ = DIR.set(resolved);
    Ok(())
}

/// The configured directory, if any.
pub fn dir() -> Option<&'static Path> {
    DIR.get().and_then(|d| d.as_deref())
}

/// Reads the file `name` of the configured directory for option `field` (e.g.
/// `options.ca_path`).
pub fn read(field: &str, name: &str) -> Result<Vec<u8>, ValidationError> {
    read_in(dir(), field, name)
}

/// Reads the file `name` of `dir` (see the module documentation for the rules).
pub fn read_in(dir: Option<&Path>, field: &str, name: &str) -> Result<Vec<u8>, ValidationError> {
    validate_trusted_file_name(field, name)?;
    let Some(dir) = dir else {
        return Err(ValidationError::new(
            field,
            "server file names are not accepted: this server has no trusted-files-dir; give the PEM text in the option without _path instead",
        ));
    };
    let refuse = || {
        ValidationError::new(
            field,
            format!(
                "{name:?} is not a readable regular file of at most {MAX_PEM_BYTES} bytes in the server's trusted files directory"
            ),
        )
    };
    // O_NOFOLLOW: a symlink planted in the directory cannot point elsewhere. O_NONBLOCK: a
    // FIFO cannot hang the open; it is refused below as not a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(name))
        .map_err(|_| refuse())?;
    let meta = file.metadata().map_err(|_| refuse())?;
    if !meta.is_file() || meta.len() > MAX_PEM_BYTES as u64 {
        return Err(refuse());
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows after the check.
    file.take(MAX_PEM_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|_| refuse())?;
    if buf.len() > MAX_PEM_BYTES {
        return Err(refuse());
    }
    Ok(buf)
}

/// Checks, when a network is created, that the TLS files its options name (`ca_path`,
/// `certificate_path`, `certificate_key_path`) can be read from the trusted files directory
/// and hold PEM, so a typo is a 400 now rather than a failed bootstrap later.
pub fn check_network(network: &model::Network) -> Result<(), ValidationError> {
    use model::validate::{PemKind, validate_pem};
    for (opt, kind) in [
        ("ca_path", PemKind::Certificates),
        ("certificate_path", PemKind::Certificates),
        ("certificate_key_path", PemKind::PrivateKey),
    ] {
        if let Some(name) = network.options.get(opt).and_then(|v| v.as_str()) {
            let field = format!("options.{opt}");
            let bytes = read(&field, name)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ValidationError::new(field.as_str(), format!("{name:?} does not hold PEM text"))
            })?;
            validate_pem(&field, &text, kind).map_err(|_| {
                ValidationError::new(
                    field.as_str(),
                    format!("{name:?} does not hold the expected PEM block"),
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_bounded_files_inside() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.pem"), "PEM").unwrap();
        std::fs::write(d.path().join("big.pem"), vec![b'A'; MAX_PEM_BYTES + 1]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link.pem")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        assert_eq!(read_in(Some(d.path()), "f", "ca.pem").unwrap(), b"PEM");
        let msg = |name: &str| read_in(Some(d.path()), "f", name).unwrap_err().message;
        // Missing, too big, symlink and directory all read alike.
        let missing = msg("nope.pem");
        for name in ["big.pem", "link.pem", "sub"] {
            assert_eq!(msg(name), missing.replace("nope.pem", name), "{name}");
        }
        for bad in ["/etc/passwd", "../ca.pem", "/dev/zero"] {
            assert_eq!(read_in(Some(d.path()), "f", bad).unwrap_err().field, "f");
        }
        let off = read_in(None, "f", "ca.pem").unwrap_err();
        assert!(off.message.contains("no trusted-files-dir"), "{off}");
    }
}
