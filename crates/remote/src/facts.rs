//! Host facts in one round trip: a POSIX sh script printing `key=value` lines, and its strict
//! parser.

use crate::RemoteError;

/// The facts script (POSIX sh), run as `sh -c '<script>'` by [`crate::Session::facts`].
///
/// It prints exactly these lines, one per fact, always in this order:
///
/// ```text
/// os_id=<ID from os-release, raw (may be quoted)>
/// os_version=<VERSION_ID from os-release, raw (may be quoted or empty)>
/// ostree=<1 if /run/ostree-booted exists, else 0>
/// cpus=<nproc>
/// memory_kib=<MemTotal from /proc/meminfo, in KiB>
/// root_kib=<size of the file system holding />, in KiB (df -Pk)>
/// hostname=<uname -n>
/// boot_id=</proc/sys/kernel/random/boot_id>
/// ```
///
/// Why these tools: only `sed`, `df -P`, `uname`, `cat` and `[` are used, which are in POSIX
/// and present on minimal Fedora/RHEL/CentOS/Debian images (no `awk`, which minimal images may
/// lack, no `hostname` binary, which Fedora containers lack). `nproc` is GNU coreutils with
/// `getconf` as the POSIX fallback. `df -Pk` (POSIX output, 1024-byte units) is used rather
/// than GNU's `-B1` so busybox systems work too; the size is exact for block sizes that are a
/// multiple of 1 KiB, which covers every common file system. `/etc/os-release` falls back to
/// `/usr/lib/os-release` as os-release(5) specifies. Values are not unquoted here: the parser
/// does that, so the script stays simple and nothing from the host is ever evaluated by a
/// shell. `LC_ALL=C` keeps tool output independent of the remote locale.
///
/// Published so that benchmarks can run the same script through OpenSSH.
pub const FACTS_SCRIPT: &str = r#"LC_ALL=C; export LC_ALL
f=/etc/os-release; [ -r "$f" ] || f=/usr/lib/os-release
echo "os_id=$(sed -n 's/^ID=//p' "$f" 2>/dev/null | sed -n 1p)"
echo "os_version=$(sed -n 's/^VERSION_ID=//p' "$f" 2>/dev/null | sed -n 1p)"
if [ -e /run/ostree-booted ]; then echo ostree=1; else echo ostree=0; fi
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"
echo "memory_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9][0-9]*\).*/\1/p' /proc/meminfo 2>/dev/null)"
echo "root_kib=$(df -Pk / 2>/dev/null | sed -n '2s/^[^[:space:]]*[[:space:]][[:space:]]*\([0-9][0-9]*\).*/\1/p')"
echo "hostname=$(uname -n)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
"#;

/// The exact command line [`crate::Session::facts`] sends: [`FACTS_SCRIPT`] wrapped in
/// `sh -c '…'`, so it behaves the same whatever the remote user's login shell is.
pub fn facts_command() -> String {
    crate::shell::sh_c(FACTS_SCRIPT)
}

/// What the investigator needs to know about a host, gathered by one exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `ID` from `/etc/os-release` (`fedora`, `rhel`, `centos`, `debian`, ...), unquoted.
    pub os_id: String,
    /// `VERSION_ID` from `/etc/os-release`, unquoted; empty on rolling distributions that do
    /// not set it (os-release(5) makes it optional).
    pub os_version: String,
    /// Whether `/run/ostree-booted` exists, i.e. the host is an OSTree ("atomic") host.
    pub ostree: bool,
    /// Online CPUs (`nproc`), at least 1.
    pub cpus: i64,
    /// `MemTotal` from `/proc/meminfo`, in KiB, greater than 0.
    pub memory_kib: i64,
    /// Size of the root file system in bytes (from `df -Pk /`, so a multiple of 1024).
    pub root_space_bytes: i64,
    /// The kernel's node name (`uname -n`).
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot, which is how a finished
    /// reboot is recognised.
    pub boot_id: String,
}

/// The keys [`FACTS_SCRIPT`] prints, in order.
const FIELDS: [&str; 8] = [
    "os_id",
    "os_version",
    "ostree",
    "cpus",
    "memory_kib",
    "root_kib",
    "hostname",
    "boot_id",
];

impl Facts {
    /// Parses the output of [`FACTS_SCRIPT`].
    ///
    /// Strict on purpose: every field must be present exactly once and well-formed, so a host
    /// that lacks a tool or file fails investigation with an error naming the field instead of
    /// being recorded with made-up values. Unknown keys are ignored so that a newer script can
    /// add facts without breaking an older parser. Only `os_version` may be empty.
    pub fn parse(output: &str) -> Result<Facts, RemoteError> {
        let mut values: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        for line in output.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(RemoteError::Facts(format!(
                    "unexpected line in facts output: {:?}",
                    truncate(line, 80)
                )));
            };
            if let Some(i) = FIELDS.iter().position(|f| *f == key) {
                if values[i].is_some() {
                    return Err(RemoteError::Facts(format!("field `{key}` appears twice")));
                }
                values[i] = Some(value.trim());
            }
        }
        let get = |name: &str| -> Result<&str, RemoteError> {
            let i = FIELDS.iter().position(|f| *f == name).expect("known field");
            values[i].ok_or_else(|| RemoteError::Facts(format!("missing field `{name}`")))
        };
        let non_empty = |name: &str, hint: &str| -> Result<String, RemoteError> {
            let v = get(name)?;
            if v.is_empty() {
                Err(RemoteError::Facts(format!(
                    "field `{name}` is empty ({hint})"
                )))
            } else {
                Ok(v.to_string())
            }
        };
        let number = |name: &str, min: i64, hint: &str| -> Result<i64, RemoteError> {
            let v = get(name)?;
            match v.parse::<i64>() {
                Ok(n) if n >= min => Ok(n),
                _ if v.is_empty() => Err(RemoteError::Facts(format!(
                    "field `{name}` is empty ({hint})"
                ))),
                _ => Err(RemoteError::Facts(format!(
                    "field `{name}` is not an integer >= {min}: {:?}",
                    truncate(v, 40)
                ))),
            }
        };

        let os_id = unquote_os_release(&non_empty("os_id", "no ID= in /etc/os-release")?);
        if os_id.is_empty() {
            return Err(RemoteError::Facts(
                "field `os_id` is empty (ID= in /etc/os-release has no value)".into(),
            ));
        }
        let os_version = unquote_os_release(get("os_version")?);
        let ostree = match get("ostree")? {
            "1" => true,
            "0" => false,
            other => {
                return Err(RemoteError::Facts(format!(
                    "field `ostree` is not 0 or 1: {:?}",
                    truncate(other, 40)
                )));
            }
        };
        let cpus = number("cpus", 1, "neither nproc nor getconf worked")?;
        let memory_kib = number("memory_kib", 1, "no MemTotal in /proc/meminfo")?;
        let root_kib = number("root_kib", 0, "df -Pk / failed")?;
        let root_space_bytes = root_kib.checked_mul(1024).ok_or_else(|| {
            RemoteError::Facts(format!("field `root_kib` is out of range: {root_kib}"))
        })?;
        let hostname = non_empty("hostname", "uname -n printed nothing")?;
        let boot_id = non_empty("boot_id", "/proc/sys/kernel/random/boot_id unreadable")?;

        Ok(Facts {
            os_id,
            os_version,
            ostree,
            cpus,
            memory_kib,
            root_space_bytes,
            hostname,
            boot_id,
        })
    }
}

/// Removes os-release(5) quoting: a value is either bare, or enclosed in double or single
/// quotes, where inside double quotes `\` escapes `"`, `\`, `$` and `` ` ``. The file is
/// shell-compatible, but it is parsed here rather than sourced so that nothing read from the
/// host is executed.
fn unquote_os_release(raw: &str) -> String {
    let raw = raw.trim();
    if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
        return raw[1..raw.len() - 1].to_string();
    }
    if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        let inner = &raw[1..raw.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                    Some(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    raw.to_string()
}

/// At most `max` characters of `s`, for error messages.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RHEL: &str = "os_id=\"rhel\"\nos_version=\"7.4\"\nostree=1\ncpus=2\n\
                        memory_kib=4194304\nroot_kib=102400\nhostname=th0001\n\
                        boot_id=5b1e1b0e-4ba0-4f6a-9d42-1f0f3c0c8a11\n";

    #[test]
    fn parses_quoted_os_release_values() {
        let f = Facts::parse(RHEL).unwrap();
        assert_eq!(
            f,
            Facts {
                os_id: "rhel".into(),
                os_version: "7.4".into(),
                ostree: true,
                cpus: 2,
                memory_kib: 4_194_304,
                root_space_bytes: 102_400 * 1024,
                hostname: "th0001".into(),
                boot_id: "5b1e1b0e-4ba0-4f6a-9d42-1f0f3c0c8a11".into(),
            }
        );
    }

    #[test]
    fn empty_version_is_allowed_and_unknown_keys_ignored() {
        let out = RHEL.replace("os_version=\"7.4\"", "os_version=") + "future=1\n";
        let f = Facts::parse(&out).unwrap();
        assert_eq!(f.os_version, "");
    }

    #[test]
    fn every_missing_field_is_named() {
        for field in FIELDS {
            let out: String = RHEL
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}=")))
                .map(|l| format!("{l}\n"))
                .collect();
            let err = Facts::parse(&out).unwrap_err().to_string();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_named() {
        for (from, to, field) in [
            ("cpus=2", "cpus=", "cpus"),
            ("cpus=2", "cpus=0", "cpus"),
            ("memory_kib=4194304", "memory_kib=lots", "memory_kib"),
            ("root_kib=102400", "root_kib=-1", "root_kib"),
            ("ostree=1", "ostree=yes", "ostree"),
            ("os_id=\"rhel\"", "os_id=", "os_id"),
            ("os_id=\"rhel\"", "os_id=\"\"", "os_id"),
            ("hostname=th0001", "hostname=", "hostname"),
            (
                "boot_id=5b1e1b0e-4ba0-4f6a-9d42-1f0f3c0c8a11",
                "boot_id=",
                "boot_id",
            ),
        ] {
            let err = Facts::parse(&RHEL.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{field}`")), "{to}: {err}");
        }
    }

    #[test]
    fn duplicates_and_garbage_are_rejected() {
        let dup = format!("{RHEL}cpus=4\n");
        assert!(
            Facts::parse(&dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let garbage = format!("{RHEL}sh: 1: nproc: not found\n");
        assert!(Facts::parse(&garbage).is_err());
        assert!(
            Facts::parse("")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn os_release_unquoting() {
        assert_eq!(unquote_os_release("fedora"), "fedora");
        assert_eq!(unquote_os_release("\"7.4\""), "7.4");
        assert_eq!(unquote_os_release("'7'"), "7");
        assert_eq!(unquote_os_release(r#""a\"b\\c\$d""#), "a\"b\\c$d");
        assert_eq!(unquote_os_release("\""), "\"");
    }

    #[test]
    fn script_runs_and_parses_locally() {
        // The machine running the tests is Linux with the same tools as the targets.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(FACTS_SCRIPT)
            .output()
            .expect("run sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let facts = Facts::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(facts.cpus >= 1 && facts.memory_kib > 0 && facts.root_space_bytes > 0);
    }
}
