//! The OpenAPI description of `/api/v0` and the Swagger UI that renders it.
//!
//! The document is served at `/api/v0/openapi.json`; the UI (vendored into the binary, nothing
//! is fetched at build or run time) at `/api/v0/docs/`.

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{clusters, events, hosts, managers, networks, operations, ops};
use crate::state::AppState;

struct BasicAuthScheme;

impl utoipa::Modify for BasicAuthScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Commissaire", description = "Manage Linux hosts over SSH: inventory, bootstrap into Kubernetes/OpenShift clusters, rolling operations. Every route except /api/v0/status needs authentication (HTTP basic by default). Errors are {\"error\": {\"status\", \"message\"}}."),
    paths(
        hosts::list, hosts::get_one, hosts::create, hosts::register, hosts::delete, hosts::creds, hosts::status,
        hosts::get_hostkey, hosts::trust_hostkey,
        clusters::list, clusters::get_one, clusters::put, clusters::delete, clusters::members,
        clusters::set_members, clusters::member, clusters::join, clusters::leave,
        networks::list, networks::get_one, networks::put, networks::delete,
        managers::list, managers::get_one, managers::put, managers::delete,
        operations::get, operations::start, operations::control,
        events::stream, ops::status,
    ),
    components(schemas(
        model::Host, model::HostState, model::HostCreds, model::HostStatus, model::HostStatusHost,
        model::Cluster, model::ClusterView, model::ClusterState, model::ClusterHostsSummary,
        model::Network, model::NetworkType, model::ContainerManagerConfig, model::ContainerManagerType,
        model::ErrorBody, model::ErrorDetail, model::TrustedHostKey,
        model::Operation, model::OperationKind, model::OperationStatus, model::OperationOptions,
        model::HostProgress, model::HostStep, model::NodeView, model::NodeRemoval, model::ClusterNodesSummary,
    )),
    modifiers(&BasicAuthScheme),
    security(("basic" = [])),
)]
pub struct ApiDoc;

/// Routes serving the document and the UI.
pub fn docs_router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/api/v0/docs").url("/api/v0/openapi.json", ApiDoc::openapi()))
}
