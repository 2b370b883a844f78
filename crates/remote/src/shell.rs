//! Quoting for POSIX shell command lines.
//!
//! SSH has no argv: the server hands one string to the remote user's shell. Everything the
//! transport builds (the facts script, upload commands) therefore goes through [`quote`] so
//! that paths with spaces or quotes cannot split words or inject commands.

/// Quotes `word` for a POSIX shell so that it is read back as exactly one word, byte for byte.
///
/// Words made only of characters that are never special (`A-Za-z0-9` and `/._-+=:,@%`) are
/// returned as they are, to keep logged commands readable; anything else is wrapped in single
/// quotes, with embedded single quotes written as `'\''` (close, escaped quote, reopen) because
/// nothing can be escaped inside single quotes.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if plain {
        return word.to_string();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Wraps a POSIX sh script as `sh -c '<script>'`.
///
/// The command string is run by the remote user's login shell, which may be bash, dash, zsh
/// or (rarely) csh/fish. Our own scripts (facts, upload) must behave the same everywhere, so
/// they are handed to `sh` explicitly; the login shell only has to parse one quoted word.
pub fn sh_c(script: &str) -> String {
    format!("sh -c {}", quote(script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(
            quote("/etc/kubernetes/kubelet.conf"),
            "/etc/kubernetes/kubelet.conf"
        );
        assert_eq!(quote("a=b,c:d@e%f+g"), "a=b,c:d@e%f+g");
    }

    #[test]
    fn special_words_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("*"), "'*'");
    }

    #[test]
    fn quoted_words_round_trip_through_sh() {
        for word in [
            "it's",
            "a b\tc",
            "$HOME `id` \\ \" ' ''",
            "new\nline",
            "-n",
            "ü",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .expect("run sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn sh_c_runs_scripts_with_quotes() {
        let command = sh_c("x='a b'; printf '%s|' \"$x\"");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .expect("run sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|");
    }
}
