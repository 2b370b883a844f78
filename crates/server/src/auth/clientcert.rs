//! `httpauthclientcert`: TLS client certificates. The TLS layer has already verified the
//! certificate against `tls-clientverifyfile`; this plugin authenticates its subject CN as
//! the user, if it matches option `cn` (any CN when unset). Roles: `roles` maps CNs to roles,
//! `default_role` covers the rest.

use serde_json::{Map, Value};

use super::{Identity, Outcome, PeerCertificate, RoleMap};

/// The plugin.
pub struct ClientCertAuth {
    cn: Option<String>,
    roles: RoleMap,
}

/// The subject common name of a DER certificate.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_string)
}

impl ClientCertAuth {
    /// Builds the plugin from `cn`, `roles`, `default_role`.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let mut options = options.clone();
        let roles = RoleMap::take("httpauthclientcert", &mut options)?;
        let mut cn = None;
        for (k, v) in &options {
            match k.as_str() {
                "cn" => {
                    cn = Some(
                        v.as_str()
                            .ok_or("httpauthclientcert: cn must be a string")?
                            .to_string(),
                    )
                }
                other => {
                    return Err(format!(
                        "httpauthclientcert: unknown option {other:?} (options: cn, roles, default_role)"
                    ));
                }
            }
        }
        Ok(ClientCertAuth { cn, roles })
    }

    pub(super) fn check(&self, cert: Option<&PeerCertificate>) -> Outcome {
        let Some(cert) = cert else {
            return Outcome::NotMine;
        };
        let Some(cn) = subject_cn(&cert.0) else {
            return Outcome::Rejected;
        };
        if self.cn.as_ref().is_some_and(|want| *want != cn) {
            return Outcome::Rejected;
        }
        let role = self.roles.role_of([cn.as_str()]);
        Outcome::Allowed(Identity::user(cn, role))
    }
}
