//! Authorization: the permission each route needs and the lowest role that holds it.
//!
//! One table, [`required`], used by the authentication layer (403 naming the missing
//! permission), by the OpenAPI document (each operation says its role) and by the tests (the
//! route × role matrix). Roles are ordered: `admin` > `operator` > `viewer`.
//!
//! | permission | role | routes |
//! |---|---|---|
//! | `read` | viewer | every `GET` not listed below |
//! | `hosts:read-creds` | operator | `GET /host/{a}/creds` |
//! | `hosts:write` | operator | `PUT /host`, `PUT`/`DELETE /host/{a}` |
//! | `membership:write` | operator | `PUT`/`DELETE /cluster/{n}/hosts…` |
//! | `operations:run` | operator | `PUT`/`DELETE /cluster/{n}/restart|upgrade|deploy…` |
//! | `hostkeys:trust` | admin | `PUT /host/{a}/hostkey` |
//! | `clusters:write` | admin | `PUT`/`DELETE /cluster/{n}` |
//! | `networks:write` | admin | `PUT`/`DELETE /network/{n}` |
//! | `containermanagers:write` | admin | `PUT`/`DELETE /containermanager/{n}` |
//! | `registration-tokens:manage` | admin | every method on `/registration-tokens…` |
//! | `audit:read` | admin | `GET /audit` |

use axum::http::Method;
use model::Role;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// The permission's name, as shown in 403 messages and the OpenAPI document.
    pub name: &'static str,
    /// The lowest role that holds it.
    pub role: Role,
}

const fn p(name: &'static str, role: Role) -> Permission {
    Permission { name, role }
}

/// The permission `method` on `path` needs. Works on concrete paths and on the document's
/// templates alike (it looks at segment positions, not values). Unknown routes need `admin`
/// for writes and `viewer` for reads, so their 404/405 is only shown to who could use them.
pub fn required(method: &Method, path: &str) -> Permission {
    let trimmed = path.trim_end_matches('/');
    let rest = trimmed.strip_prefix("/api/v0/").unwrap_or("");
    let seg: Vec<&str> = rest.split('/').collect();
    let read = *method == Method::GET || *method == Method::HEAD;
    if read {
        return match seg.as_slice() {
            ["host", _, "creds"] => p("hosts:read-creds", Role::Operator),
            ["audit"] => p("audit:read", Role::Admin),
            ["registration-tokens", ..] => p("registration-tokens:manage", Role::Admin),
            _ => p("read", Role::Viewer),
        };
    }
    match seg.as_slice() {
        ["host"] | ["host", _] => p("hosts:write", Role::Operator),
        ["host", _, "hostkey"] => p("hostkeys:trust", Role::Admin),
        ["cluster", _] => p("clusters:write", Role::Admin),
        ["cluster", _, "hosts", ..] => p("membership:write", Role::Operator),
        ["cluster", _, "restart" | "upgrade" | "deploy", ..] => p("operations:run", Role::Operator),
        ["network", _] => p("networks:write", Role::Admin),
        ["containermanager", _] => p("containermanagers:write", Role::Admin),
        ["registration-tokens", ..] => p("registration-tokens:manage", Role::Admin),
        _ => p("write", Role::Admin),
    }
}

/// Whether a registration token may make this request: only self-registration.
pub fn registration_allowed(method: &Method, path: &str) -> bool {
    *method == Method::PUT && path.trim_end_matches('/') == "/api/v0/host"
}

/// What a request is about, for the audit log: the path below `/api/v0/` without the trailing
/// slash (`host/10.0.0.1`, `cluster/prod/hosts/10.0.0.2`), or `None` for the API root.
pub fn target(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/api/v0/")
        .unwrap_or(path.trim_start_matches('/'))
        .trim_end_matches('/');
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let r = |m: Method, path: &str| required(&m, path);
        assert_eq!(r(Method::GET, "/api/v0/hosts").role, Role::Viewer);
        assert_eq!(
            r(Method::GET, "/api/v0/host/1.2.3.4/creds/").name,
            "hosts:read-creds"
        );
        assert_eq!(r(Method::PUT, "/api/v0/host").name, "hosts:write");
        assert_eq!(
            r(Method::PUT, "/api/v0/host/{address}/hostkey").role,
            Role::Admin
        );
        assert_eq!(
            r(Method::DELETE, "/api/v0/cluster/c").name,
            "clusters:write"
        );
        assert_eq!(
            r(Method::PUT, "/api/v0/cluster/c/hosts/a").role,
            Role::Operator
        );
        assert_eq!(
            r(Method::PUT, "/api/v0/cluster/c/restart/pause").name,
            "operations:run"
        );
        assert_eq!(r(Method::PUT, "/api/v0/network/n").role, Role::Admin);
        assert_eq!(
            r(Method::POST, "/api/v0/registration-tokens").role,
            Role::Admin
        );
        assert_eq!(r(Method::GET, "/api/v0/audit").role, Role::Admin);
        assert!(registration_allowed(&Method::PUT, "/api/v0/host/"));
        assert!(!registration_allowed(&Method::PUT, "/api/v0/host/1.2.3.4"));
        assert!(!registration_allowed(&Method::GET, "/api/v0/host"));
        assert_eq!(
            target("/api/v0/host/1.2.3.4/").as_deref(),
            Some("host/1.2.3.4")
        );
    }
}
