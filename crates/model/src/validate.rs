//! Validation of the identifiers that appear in URLs and store keys: host addresses and the
//! names of clusters, networks and container managers.
//!
//! These checks run before anything is written, so a bad identifier can never become a store
//! key. Addresses are also put in canonical form (lower-case DNS names, compressed IPv6) so one
//! host cannot be registered twice under two spellings.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ValidationError;

/// Longest accepted name or DNS address, as in DNS.
pub const MAX_NAME_LEN: usize = 253;

/// Checks a cluster, network or container-manager name: `[A-Za-z0-9_-]{1,253}`.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} characters long; the limit is {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(ValidationError::new(
            field,
            format!("{name:?} contains {bad:?}; only letters, digits, '_' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// Checks a host address (IPv4, IPv6 or DNS name) and returns its canonical spelling.
pub fn canonical_address(field: &str, address: &str) -> Result<String, ValidationError> {
    if address.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if let Ok(v4) = address.parse::<Ipv4Addr>() {
        return Ok(v4.to_string());
    }
    if address.contains(':') {
        let inner = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        return match inner.parse::<Ipv6Addr>() {
            Ok(v6) => Ok(v6.to_string()),
            Err(_) => Err(ValidationError::new(
                field,
                format!("{address:?} is not a valid IPv6 address"),
            )),
        };
    }
    validate_dns_name(field, address)?;
    // `node.example.com.` and `node.example.com` name the same host: one key for both.
    Ok(address
        .strip_suffix('.')
        .unwrap_or(address)
        .to_ascii_lowercase())
}

fn validate_dns_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let bad = |why: String| {
        Err(ValidationError::new(
            field,
            format!("{name:?} is not an IPv4 address, an IPv6 address or a DNS name: {why}"),
        ))
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > MAX_NAME_LEN {
        return bad(format!("longer than {MAX_NAME_LEN} characters"));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return bad("it has an empty label".into());
        }
        if label.len() > 63 {
            return bad(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(format!("{c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(format!("label {label:?} starts or ends with '-'"));
        }
    }
    // An all-numeric last label means a mistyped IPv4 address (e.g. 10.0.0.300), not a name.
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("it looks like an IPv4 address but is not a valid one".into());
    }
    Ok(())
}

/// Largest PEM document (certificate bundle or key) accepted in an option or read from the
/// trusted files directory: far above any real bundle, far below what could hurt the server.
pub const MAX_PEM_BYTES: usize = 1024 * 1024;

/// Longest URL accepted in an option that reaches a host file.
pub const MAX_URL_LEN: usize = 2048;

/// Checks an OSTree version for `rpm-ostree deploy`. The one rule shared by the API (400 at
/// `POST .../deploy`) and the worker (checked again before the command is built): 1 to 128
/// letters, digits, `.`, `_`, `:` or `-`, not starting with `-` (it would read as an option).
/// The set is a plain shell word, so the version can never change the command it lands in.
pub fn validate_ostree_version(field: &str, version: &str) -> Result<(), ValidationError> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with('-')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{version:?} is not a valid OSTree version (1-128 letters, digits, '.', '_', ':' or '-', not starting with '-')"
            ),
        ))
    }
}

/// Checks an `http://` or `https://` URL that will be written into host files (sysconfig
/// values, kubeconfig YAML, command-line options in systemd units): a host part, at most
/// [`MAX_URL_LEN`] characters, and only characters that are literal in all of those syntaxes
/// (RFC 3986 unreserved and delimiters minus quotes, `$`, `;`, `&`, `!`, `*`, parentheses and
/// backslash; no whitespace or control characters).
pub fn validate_url(field: &str, s: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            field,
            format!("{s:?} is not a usable http:// or https:// URL: {why}"),
        ))
    };
    if s.len() > MAX_URL_LEN {
        return bad(&format!("longer than {MAX_URL_LEN} characters"));
    }
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return bad("it must start with http:// or https://");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("it has no host");
    }
    if let Some(c) = s.chars().find(|c| !is_url_char(*c)) {
        return bad(&format!("{c:?} is not allowed"));
    }
    Ok(())
}

fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | '~' | '-' | ':' | '/' | '?' | '#' | '[' | ']' | '@' | '+' | ',' | '=' | '%'
        )
}

/// Checks an etcd key prefix (flannel's configuration key): absolute, at most 512 characters
/// of letters, digits, `/`, `_`, `.` and `-`. It is written into a sysconfig file, so nothing
/// that could end the value or start a new line is accepted.
pub fn validate_etcd_key(field: &str, key: &str) -> Result<(), ValidationError> {
    let ok = key.starts_with('/')
        && key.len() <= 512
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{key:?} is not an etcd key: it must start with '/' and hold only letters, digits, '/', '_', '.' and '-' (at most 512)"
            ),
        ))
    }
}

/// Checks a bearer token written into a kubeconfig (a YAML plain scalar): 1 to 8192 of the
/// characters real Kubernetes and OpenShift tokens use (base64url, JWT dots, `~`, `+`, `/`,
/// `=`, `:`). Anything else could end the scalar or open a YAML construct.
pub fn validate_token(field: &str, token: &str) -> Result<(), ValidationError> {
    let ok = !token.is_empty()
        && token.len() <= 8192
        && !token.starts_with(':')
        && token.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-' | '+' | '/' | '=' | ':')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "must be 1-8192 characters of letters, digits and . _ ~ - + / = : (the token is not shown)",
        ))
    }
}

/// What a PEM option must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemKind {
    /// One or more certificates (`-----BEGIN CERTIFICATE-----`).
    Certificates,
    /// A private key (`-----BEGIN ... PRIVATE KEY-----`).
    PrivateKey,
}

/// Checks PEM text given in an option: at most [`MAX_PEM_BYTES`], ASCII, with the expected
/// armour. The error never quotes the text (it may be a key).
pub fn validate_pem(field: &str, text: &str, kind: PemKind) -> Result<(), ValidationError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes; the limit is {MAX_PEM_BYTES}", text.len()),
        ));
    }
    let ok = text.is_ascii()
        && match kind {
            PemKind::Certificates => text.contains("-----BEGIN CERTIFICATE-----"),
            PemKind::PrivateKey => {
                text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----")
            }
        };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            match kind {
                PemKind::Certificates => {
                    "must be PEM text holding at least one -----BEGIN CERTIFICATE----- block (the text itself, not a path)"
                }
                PemKind::PrivateKey => {
                    "must be PEM text holding a -----BEGIN ... PRIVATE KEY----- block (the text itself, not a path)"
                }
            },
        ))
    }
}

/// Checks the name of a file in the operator's trusted files directory: a plain file name
/// (letters, digits, `.`, `_`, `-`; not starting with `.`; at most 255), never a path, so it
/// cannot leave that directory. The error does not depend on any file system state.
pub fn validate_trusted_file_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{name:?} is not the name of a file in the server's trusted files directory (a plain file name, not a path; give PEM text in the option without _path instead)"
            ),
        ))
    }
}

/// Escapes a value for the inside of a double-quoted sysconfig (shell-style) assignment:
/// backslash, `"`, `$` and backtick get a backslash and line breaks become spaces, so a value
/// can neither end the quotes nor start another line. Validated values pass through unchanged.
pub fn escape_sysconfig(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' | '`' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes a value as a YAML scalar: unchanged when it is a safe plain scalar (starts with a letter
/// or digit, then only characters that are literal in a plain scalar), otherwise as
/// a double-quoted scalar with `\`, `"` and control characters escaped.
pub fn escape_yaml(value: &str) -> String {
    let plain = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && !value.contains(": ")
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '.' | '_' | '~' | '-' | ':' | '/' | '?' | '@' | '+' | '=' | '%'
                )
        });
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_file_values() {
        assert!(validate_ostree_version("v", "7.2.1").is_ok());
        assert!(validate_ostree_version("v", "42:abc_1-2").is_ok());
        for bad in ["", "-x", "1;reboot", "1 2", "1+2", "$(id)", "a\nb"] {
            assert!(validate_ostree_version("v", bad).is_err(), "{bad:?}");
        }
        assert!(validate_url("u", "https://etcd.example.com:2379").is_ok());
        assert!(validate_url("u", "http://[::1]:2379/x?y=1").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https:///x",
            "https://a b",
            "https://a\"b",
            "https://a$(id)",
            "https://a\nEVIL=1",
            "https://a;b",
            "https://a`b`",
        ] {
            assert!(validate_url("u", bad).is_err(), "{bad:?}");
        }
        assert!(validate_etcd_key("k", "/atomic01/network").is_ok());
        for bad in ["x", "/a\"\nEVIL=\"$(id)\"", "/a b", "/a$b", ""] {
            assert!(validate_etcd_key("k", bad).is_err(), "{bad:?}");
        }
        assert!(validate_token("t", "sha256~abc-DEF_123").is_ok());
        assert!(validate_token("t", "eyJh.eyJz.c2ln").is_ok());
        for bad in ["", "a b", "a\nb", "a\"b", "a#b", ": x"] {
            assert!(validate_token("t", bad).is_err(), "{bad:?}");
        }
        let e = validate_token("options.token", "sec ret").unwrap_err();
        assert!(!e.message.contains("sec ret"));
    }

    #[test]
    fn pem_and_file_names() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        assert!(validate_pem("ca", cert, PemKind::Certificates).is_ok());
        assert!(validate_pem("k", key, PemKind::PrivateKey).is_ok());
        assert!(validate_pem("ca", "/etc/ssl/ca.pem", PemKind::Certificates).is_err());
        assert!(validate_pem("k", cert, PemKind::PrivateKey).is_err());
        let big = format!("{cert}{}", "A".repeat(MAX_PEM_BYTES));
        assert!(validate_pem("ca", &big, PemKind::Certificates).is_err());
        let e = validate_pem("k", "secret-stuff", PemKind::PrivateKey).unwrap_err();
        assert!(!e.message.contains("secret-stuff"));
        assert!(validate_trusted_file_name("f", "kube-ca.pem").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/b", ".hidden", "..", "a b"] {
            assert!(validate_trusted_file_name("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_sysconfig("http://a:1"), "http://a:1");
        assert_eq!(
            escape_sysconfig("x\"\nEVIL=\"$(id)`"),
            "x\\\" EVIL=\\\"\\$(id)\\`"
        );
        assert_eq!(escape_yaml("https://k:6443"), "https://k:6443");
        assert_eq!(escape_yaml("a: b"), "\"a: b\"");
        assert_eq!(escape_yaml("x\ny"), "\"x\\ny\"");
        assert_eq!(escape_yaml("-x"), "\"-x\"");
    }

    proptest! {
        #[test]
        fn escaped_sysconfig_never_breaks_out(s in "\\PC{0,40}|[\"$`\\\\\n a-z]{0,20}") {
            let e = escape_sysconfig(&s);
            prop_assert!(!e.contains('\n'));
            // Every quote, dollar and backtick is preceded by a backslash.
            let chars: Vec<char> = e.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                if chars[i] == '\\' { i += 2; continue; }
                prop_assert!(!matches!(chars[i], '"' | '$' | '`'));
                i += 1;
            }
        }

        #[test]
        fn escaped_yaml_is_one_line(s in "\\PC{0,40}|[\"#:\n a-z-]{0,20}") {
            prop_assert!(!escape_yaml(&s).contains('\n'));
        }

        #[test]
        fn validators_never_panic(s in "\\PC{0,60}") {
            let _ = validate_url("u", &s);
            let _ = validate_etcd_key("k", &s);
            let _ = validate_token("t", &s);
            let _ = validate_ostree_version("v", &s);
            let _ = validate_trusted_file_name("f", &s);
            let _ = validate_pem("p", &s, PemKind::Certificates);
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(canonical_address("a", "10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(
            canonical_address("a", "2001:DB8:0::1").unwrap(),
            "2001:db8::1"
        );
        assert_eq!(canonical_address("a", "[::1]").unwrap(), "::1");
        assert_eq!(
            canonical_address("a", "Node-1.Example.com").unwrap(),
            "node-1.example.com"
        );
        assert_eq!(
            canonical_address("a", "node-1.example.com.").unwrap(),
            "node-1.example.com"
        );
        for bad in [
            "",
            "10.0.0.300",
            "10.0.0",
            "1.2.3.4.5",
            "a..b",
            "-a.b",
            "a_b.c",
            "2001:db8::g",
            "host/x",
            "a b",
            "ünicode.example",
        ] {
            assert!(canonical_address("address", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("name", "c-1_X").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "a.b").is_err());
        assert!(validate_name("name", &"a".repeat(254)).is_err());
        assert!(validate_name("name", &"a".repeat(253)).is_ok());
    }

    proptest! {
        #[test]
        fn any_ipv4_is_accepted_and_canonical(a: u8, b: u8, c: u8, d: u8) {
            let s = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(canonical_address("a", &s).unwrap(), s);
        }

        #[test]
        fn any_ipv6_round_trips(bits: u128) {
            let v6 = Ipv6Addr::from(bits);
            let canon = canonical_address("a", &v6.to_string()).unwrap();
            prop_assert_eq!(canon.parse::<Ipv6Addr>().unwrap(), v6);
            // Canonical form is a fixed point.
            prop_assert_eq!(canonical_address("a", &canon).unwrap(), canon);
        }

        #[test]
        fn valid_names_accepted(name in "[A-Za-z0-9_-]{1,253}") {
            prop_assert!(validate_name("n", &name).is_ok());
        }

        #[test]
        fn names_with_other_chars_rejected(prefix in "[A-Za-z0-9_-]{0,10}", bad in "[^A-Za-z0-9_-]", suffix in "[A-Za-z0-9_-]{0,10}") {
            let name = format!("{prefix}{bad}{suffix}");
            prop_assert!(validate_name("n", &name).is_err());
        }

        #[test]
        fn dns_names_accepted(labels in proptest::collection::vec("[a-z][a-z0-9-]{0,20}[a-z0-9]", 1..5)) {
            let name = labels.join(".");
            prop_assert_eq!(canonical_address("a", &name).unwrap(), name);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = canonical_address("a", &s);
            let _ = validate_name("n", &s);
        }

        #[test]
        fn accepted_addresses_are_safe_keys(s in "\\PC{0,40}") {
            if let Ok(canon) = canonical_address("a", &s) {
                prop_assert!(!canon.contains('/'));
                prop_assert!(!canon.is_empty());
            }
        }
    }
}
