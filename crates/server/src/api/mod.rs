//! The `/api/v0` routes, one module per resource, and the helpers they share.
//!
//! Handlers are thin: they extract the path and body, call one function of the `domain`
//! crate (which validates everything before writing, and writes in one compare-and-swap
//! transaction), and map its answer. They hold no store transactions and no rules of their own.

pub mod access;
pub mod bodies;
pub mod clusters;
pub mod events;
pub mod hosts;
pub mod managers;
pub mod networks;
pub mod operations;
pub mod ops;

use axum::Router;
use axum::body::Bytes;
use axum::routing::MethodRouter;
use model::{Fields, canonical_address, parse_body, validate_name};

use crate::error::ApiResult;
use crate::state::AppState;

/// Parses a request body into a JSON object (400 naming the problem otherwise).
pub fn body_fields(body: &Bytes) -> ApiResult<Fields> {
    Ok(parse_body(body)?)
}

/// Validates a URL name parameter.
pub fn url_name(field: &str, name: &str) -> ApiResult<String> {
    validate_name(field, name)?;
    Ok(name.to_string())
}

/// Validates and canonicalizes a URL address parameter.
pub fn url_address(address: &str) -> ApiResult<String> {
    Ok(canonical_address("address", address)?)
}

/// The API router together with the paths it serves, built side by side so that the OpenAPI
/// test can check every route against the document (axum cannot list a router's routes).
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    /// Adds `path` and `path/` (a trailing slash is optional on every route).
    pub(crate) fn route(mut self, path: &str, mr: MethodRouter<AppState>) -> Routes {
        self.router = self
            .router
            .route(path, mr.clone())
            .route(&format!("{path}/"), mr);
        self.paths.push(path.to_string());
        self
    }
}

/// Every `/api/v0` route, with its path.
pub fn routes() -> Routes {
    use axum::routing::{get, put};
    let mut r = Routes {
        router: Router::new(),
        paths: Vec::new(),
    };
    r = r.route("/api/v0/hosts", get(hosts::list));
    r = r.route("/api/v0/host", put(hosts::register));
    r = r.route(
        "/api/v0/host/{address}",
        get(hosts::get_one).put(hosts::create).delete(hosts::delete),
    );
    r = r.route("/api/v0/host/{address}/creds", get(hosts::creds));
    r = r.route("/api/v0/host/{address}/status", get(hosts::status));
    r = r.route(
        "/api/v0/host/{address}/hostkey",
        get(hosts::get_hostkey).put(hosts::trust_hostkey),
    );
    r = r.route("/api/v0/clusters", get(clusters::list));
    r = r.route(
        "/api/v0/cluster/{name}",
        get(clusters::get_one)
            .put(clusters::put)
            .delete(clusters::delete),
    );
    r = r.route(
        "/api/v0/cluster/{name}/hosts",
        get(clusters::members).put(clusters::set_members),
    );
    r = r.route(
        "/api/v0/cluster/{name}/hosts/{address}",
        get(clusters::member)
            .put(clusters::join)
            .delete(clusters::leave),
    );
    for kind in model::OperationKind::ALL {
        r = operations::routes(r, kind);
    }
    r = r.route("/api/v0/networks", get(networks::list));
    r = r.route(
        "/api/v0/network/{name}",
        get(networks::get_one)
            .put(networks::put)
            .delete(networks::delete),
    );
    r = r.route("/api/v0/containermanagers", get(managers::list));
    r = r.route(
        "/api/v0/containermanager/{name}",
        get(managers::get_one)
            .put(managers::put)
            .delete(managers::delete),
    );
    r = r.route(
        "/api/v0/registration-tokens",
        get(access::list).post(access::create),
    );
    r = r.route(
        "/api/v0/registration-tokens/{id}",
        axum::routing::delete(access::revoke),
    );
    r = r.route("/api/v0/audit", get(access::audit));
    r = r.route("/api/v0/events", get(events::stream));
    r = r.route("/api/v0/status", get(ops::status));
    r
}

/// Every `/api/v0` route.
pub fn router() -> Router<AppState> {
    routes().router
}

/// The path templates of every `/api/v0` route (each also answers with a trailing slash).
pub fn paths() -> Vec<String> {
    routes().paths
}
