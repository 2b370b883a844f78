//! Checking SSH keys that arrive through the API, in the one crate that knows SSH: a private
//! key must parse before it is sealed and stored, and a host key given to re-trust a host must
//! be an OpenSSH public key line. Nothing here keeps a copy of a private key.

use base64::Engine;
use zeroize::Zeroizing;

/// Why a key given through the API was refused. The messages name the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The field is empty.
    #[error("is required (the base64 of the host's SSH private key file)")]
    Missing,
    /// Not base64.
    #[error("is not base64; send the base64 of the private key file")]
    NotBase64,
    /// Decodes to bytes that are not text.
    #[error("does not decode to a text private key file")]
    NotText,
    /// The key is protected by a passphrase.
    #[error("the key is protected by a passphrase; give an unencrypted key")]
    Encrypted,
    /// Not a private key we can use.
    #[error("does not parse as a private key (OpenSSH or PEM format; Ed25519, ECDSA or RSA)")]
    Unparsable,
    /// Not an OpenSSH public key line.
    #[error("is not an OpenSSH public key line (e.g. \"ssh-ed25519 AAAA...\")")]
    NotPublicKey,
}

/// Decodes the API's `ssh_priv_key` (base64 of the key file; whitespace ignored) into the key
/// file's text.
pub fn decode_private_key_b64(b64: &str) -> Result<Zeroizing<String>, KeyError> {
    let cleaned: Zeroizing<String> =
        Zeroizing::new(b64.chars().filter(|c| !c.is_whitespace()).collect());
    if cleaned.is_empty() {
        return Err(KeyError::Missing);
    }
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|_| KeyError::NotBase64)?,
    );
    let text = String::from_utf8(raw.to_vec()).map_err(|_| KeyError::NotText)?;
    Ok(Zeroizing::new(text))
}

/// Checks that `b64` is the base64 of an unencrypted private key file that parses.
pub fn check_private_key_b64(b64: &str) -> Result<(), KeyError> {
    let text = decode_private_key_b64(b64)?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(_) => Ok(()),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(KeyError::Encrypted),
        Err(_) => Err(KeyError::Unparsable),
    }
}

/// A parsed public host key: its canonical OpenSSH line and SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyLine {
    /// `ssh-ed25519 AAAA...` (no comment).
    pub openssh: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

/// Parses an OpenSSH public key line (as given to re-trust a host).
pub fn parse_public_key(line: &str) -> Result<PublicKeyLine, KeyError> {
    let parsed =
        russh::keys::PublicKey::from_openssh(line.trim()).map_err(|_| KeyError::NotPublicKey)?;
    Ok(PublicKeyLine {
        openssh: parsed.to_openssh().map_err(|_| KeyError::NotPublicKey)?,
        fingerprint: parsed.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(check_private_key_b64("  "), Err(KeyError::Missing));
        assert_eq!(check_private_key_b64("@@@"), Err(KeyError::NotBase64));
        assert_eq!(check_private_key_b64("//79"), Err(KeyError::NotText));
        let junk = base64::engine::general_purpose::STANDARD.encode("not a key");
        assert_eq!(check_private_key_b64(&junk), Err(KeyError::Unparsable));
        assert_eq!(
            parse_public_key("ssh-ed25519 nope"),
            Err(KeyError::NotPublicKey)
        );
    }
}
