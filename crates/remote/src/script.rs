//! Whole scripts in one exec: a multi-step job (bootstrap) costs one channel, one process tree
//! on the host and one round trip, however many files and commands it has.
//!
//! The script travels on stdin, not on the command line: a command line is one argument to the
//! remote login shell, limited to 128 KiB on Linux and visible in `ps`, while a script carrying
//! certificates and tokens can be larger and must stay private. The fixed [`loader`] on the
//! command line reads it whole, checks its length and only then runs it, so a connection
//! dropped mid-transfer runs nothing rather than a truncated prefix. The script
//! runs with stdin from `/dev/null`, so no command in it can swallow input meant for another,
//! and with the session's umask, as a command run by [`crate::Session::exec`] would.

use base64::Engine;

use crate::RemoteError;
use crate::shell::sh_c;

/// Exit status of the [`loader`] when the script did not arrive whole (nothing was run).
pub const LOADER_FAILED: u32 = 125;

/// Line length of base64 bodies of [`heredoc_into`], as `base64` itself wraps.
const BASE64_LINE: usize = 76;

/// Delimiter of [`heredoc_into`]; `_` is not in the base64 alphabet, so no base64 line can
/// end the document early (raw bodies are checked for it).
const HEREDOC_END: &str = "COMMISSAIRE_EOF";

/// The loader's variable holding the script. A script must not assign it: dash's `eval`
/// reads its text from the variable's memory as it goes, so replacing the value under it would
/// run freed memory (hence a name no script uses by accident).
pub const SCRIPT_VAR: &str = "commissaire_loaded_script";

/// The command line that receives a script of exactly `len` bytes on stdin and runs it in
/// the same `sh` (see the module notes). Exits [`LOADER_FAILED`] without running anything
/// when fewer or more bytes arrived; otherwise with the script's own exit status.
///
/// The script is read into a variable (one `cat`) and `eval`ed, rather than stored in a file
/// and run by a second `sh`: on a host every process counts (`mktemp`, `wc`, `sh` and `rm`
/// would be four more forks and execs per run, as many as a step), a variable needs no
/// cleanup, and, not being exported, is seen by no command the script runs.
/// `${#s}` counts characters, which are bytes only for ASCII: [`crate::Session::run_script`]
/// refuses other scripts. The `.` appended inside the command substitution keeps the
/// script's trailing newlines, which `$(...)` would strip.
pub fn loader(len: usize) -> String {
    sh_c(&format!(
        "{V}=$(cat; echo .) || exit {LOADER_FAILED}\n\
         {V}=${{{V}%.}}\n\
         if [ \"${{#{V}}}\" -ne {len} ]; then echo \"script: received ${{#{V}}} of {len} bytes\" >&2; exit {LOADER_FAILED}; fi\n\
         eval \"${V}\" < /dev/null\n",
        V = SCRIPT_VAR
    ))
}

/// A shell function `name` that writes its stdin to `path` atomically with permission bits
/// `mode`, refusing anything but exactly `len` bytes: the same script as
/// [`crate::Session::upload`], run in a subshell so its `set -e`, traps and umask stay its own.
pub fn write_file_function(
    name: &str,
    path: &str,
    mode: u32,
    len: usize,
) -> Result<String, RemoteError> {
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || name.as_bytes()[0].is_ascii_digit()
    {
        return Err(RemoteError::InvalidArgument(format!(
            "{name:?} is not a shell function name"
        )));
    }
    Ok(format!(
        "{name}() (\n{})\n",
        crate::upload_script(path, mode, len)?
    ))
}

/// `contents` fed to `consumer` (a command, with any redirections) as a shell
/// here-document, ending in a newline: the bytes themselves when the shell keeps them as they
/// are (ASCII text without NUL, ending in a newline, no line equal to the delimiter: the
/// rendered configuration files), else base64 decoded by `base64 -d` on the host (any
/// bytes: keys, text without a final newline). Either way the text is ASCII, as
/// [`crate::Session::run_script`] requires, and nothing in it is expanded (quoted delimiter).
pub fn heredoc_into(consumer: &str, contents: &[u8]) -> String {
    let raw = (contents.is_empty() || contents.ends_with(b"\n"))
        && contents
            .iter()
            .all(|b| b.is_ascii() && *b != 0 && (*b >= b' ' || b"\n\t".contains(b)))
        && !contents
            .split(|b| *b == b'\n')
            .any(|line| line == HEREDOC_END.as_bytes());
    let mut out = String::with_capacity(contents.len() * 4 / 3 + consumer.len() + 64);
    let body = if raw {
        out.push_str(consumer);
        out.push_str(" <<'");
        // ASCII checked above.
        String::from_utf8_lossy(contents).into_owned()
    } else {
        out.push_str("base64 -d <<'");
        let encoded = base64::engine::general_purpose::STANDARD.encode(contents);
        let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / BASE64_LINE + 1);
        for chunk in encoded.as_bytes().chunks(BASE64_LINE) {
            // The alphabet is ASCII: chunks split on character boundaries.
            wrapped.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            wrapped.push('\n');
        }
        wrapped
    };
    out.push_str(HEREDOC_END);
    out.push('\'');
    if !raw {
        out.push_str(" | ");
        out.push_str(consumer);
    }
    out.push('\n');
    out.push_str(&body);
    out.push_str(HEREDOC_END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn run_loaded(script: &[u8], claimed: usize) -> std::process::Output {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(loader(claimed))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn loader_runs_whole_scripts_only() {
        let script = b"echo ran; read x && echo stole-stdin; exit 3\n";
        let out = run_loaded(script, script.len());
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
        // A truncated script (the connection dropped) runs nothing.
        let out = run_loaded(&script[..10], script.len());
        assert_eq!(out.status.code(), Some(LOADER_FAILED as i32));
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("received 10 of"),
            "{out:?}"
        );
    }

    #[test]
    fn files_round_trip_through_heredocs() {
        let dir = tempfile_dir("heredoc");
        let path = dir.join("sub/it's");
        let contents = b"no final newline\0\nCOMMISSAIRE_EOF\n'$(id)'";
        let f =
            write_file_function("put_0", path.to_str().unwrap(), 0o600, contents.len()).unwrap();
        let script = format!("{f}{}echo status $?\n", heredoc_into("put_0", contents));
        let out = run_loaded(script.as_bytes(), script.len());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "status 0\n");
        assert_eq!(std::fs::read(&path).unwrap(), contents);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // A wrong length is refused and leaves nothing.
        let other = dir.join("other");
        let f = write_file_function("put_1", other.to_str().unwrap(), 0o644, 99).unwrap();
        let script = format!("{f}{}echo status $?\n", heredoc_into("put_1", b"abc"));
        let out = run_loaded(script.as_bytes(), script.len());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "status 1\n");
        assert!(!other.exists());
        // Plain text travels as it is; bytes the shell would not keep as they are, in base64.
        for (i, (text, raw)) in [
            (&b"A=\"$(id)\" `x` \\\n\ttab\n"[..], true),
            (b"", true),
            (b"no final newline", false),
            (b"x\nCOMMISSAIRE_EOF\ny\n", false),
            ("ü\n".as_bytes(), false),
            (b"cr\r\n", false),
        ]
        .into_iter()
        .enumerate()
        {
            let doc = heredoc_into(&format!("put_{i}"), text);
            assert_eq!(doc.starts_with("base64"), !raw, "{doc}");
            assert!(doc.is_ascii());
            let path = dir.join(format!("t{i}"));
            let f = write_file_function(
                &format!("put_{i}"),
                path.to_str().unwrap(),
                0o644,
                text.len(),
            )
            .unwrap();
            let script = format!("{f}{doc}echo status $?\n");
            let out = run_loaded(script.as_bytes(), script.len());
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "status 0\n",
                "{out:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), text, "{doc}");
        }
        assert!(write_file_function("1x", "/x", 0o644, 0).is_err());
        assert!(write_file_function("a;b", "/x", 0o644, 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(what: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("commissaire-script-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
