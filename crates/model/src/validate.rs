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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
