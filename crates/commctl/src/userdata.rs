//! `commctl user-data`: the cloud-init user-data that makes a new host register itself.
//!
//! The output is a MIME multipart/mixed document, written the way Python's `email.mime`
//! writes it (base64 bodies, LF line ends), with three parts in the order cloud-init needs:
//! the cloud-config, then the part handler, then the `text/x-commissaire-host` data the
//! handler consumes (a handler must come before the parts it handles).

use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value};

/// The part handler shipped with commctl.
pub const PART_HANDLER: &str = include_str!("../data/part-handler.py");
/// The default cloud-config part.
pub const DEFAULT_CLOUD_CONFIG: &str = "#cloud-config\n\nfinal_message: \"Finished booting\"\n";

/// What the new host needs to register.
#[derive(Clone, Debug, Default)]
pub struct HostData {
    /// Commissaire server URL.
    pub endpoint: String,
    /// Registration token the host sends as `Authorization: Bearer` (never a password: it
    /// can only register hosts, and expires).
    pub token: Option<String>,
    /// Cluster to join.
    pub cluster: Option<String>,
    /// User the server logs in as.
    pub remote_user: String,
    /// Private key path on the host (created when missing).
    pub ssh_key_path: Option<String>,
    /// authorized_keys path on the host.
    pub authorized_keys_path: Option<String>,
}

impl HostData {
    /// The JSON the part handler reads; absent values are left out.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("endpoint".into(), Value::String(self.endpoint.clone()));
        let opt = [
            ("registration_token", &self.token),
            ("cluster", &self.cluster),
            ("ssh_key_path", &self.ssh_key_path),
            ("authorized_keys_path", &self.authorized_keys_path),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        m.insert(
            "remote_user".into(),
            Value::String(self.remote_user.clone()),
        );
        serde_json::to_string_pretty(&Value::Object(m)).expect("JSON object serializes")
    }
}

fn base64_lines(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(b64.len() + b64.len() / 76 + 1);
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

/// Builds the multipart document. `cloud_config` replaces the default cloud-config part.
pub fn build(host: &HostData, cloud_config: Option<&str>) -> String {
    let parts: [(&str, &str, String); 3] = [
        (
            "text/cloud-config",
            "cloud-init.txt",
            cloud_config.unwrap_or(DEFAULT_CLOUD_CONFIG).to_string(),
        ),
        (
            "text/part-handler",
            "part-handler.py",
            PART_HANDLER.to_string(),
        ),
        (
            "text/x-commissaire-host",
            "commissaire-host.json",
            host.to_json(),
        ),
    ];
    // Base64 bodies never contain '=' runs like this boundary, so it cannot collide.
    let boundary = format!(
        "==============={:019}==",
        rand::rng().random_range(0..u64::MAX / 2)
    );
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for (ctype, filename, body) in parts {
        out.push_str(&format!(
            "--{boundary}\nContent-Type: {ctype}; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"{filename}\"\n\n"
        ));
        out.push_str(&base64_lines(body.as_bytes()));
    }
    out.push_str(&format!("--{boundary}--\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_shape() {
        let doc = build(
            &HostData {
                endpoint: "https://c.example:8000".into(),
                cluster: Some("c1".into()),
                remote_user: "root".into(),
                ..Default::default()
            },
            None,
        );
        let cc = doc.find("text/cloud-config").unwrap();
        let ph = doc.find("text/part-handler").unwrap();
        let host = doc.find("text/x-commissaire-host").unwrap();
        assert!(cc < ph && ph < host);
        assert!(doc.starts_with("Content-Type: multipart/mixed; boundary="));
        assert!(!doc.contains("password"));
        let with_token = HostData {
            token: Some("cmsreg_ab.cd".into()),
            ..Default::default()
        };
        assert!(
            with_token
                .to_json()
                .contains("\"registration_token\": \"cmsreg_ab.cd\"")
        );
    }
}
