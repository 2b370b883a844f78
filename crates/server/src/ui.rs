//! The web dashboard: three static files compiled into the binary and served at `/ui/` (`/`
//! redirects there), outside authentication since they hold no data. Everything the page
//! shows comes from `/api/v0` with the user's own credentials: the dashboard adds no rules and
//! no routes of its own besides these files.
//!
//! The sources are `crates/server/ui/`; plain JavaScript, no build step and nothing fetched at
//! build or run time.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// Only this origin's own files and API: no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The files change with the binary: revalidate rather than keep a stale copy.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard's routes: `/`, `/ui`, `/ui/`, `/ui/app.js`, `/ui/app.css`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

/// Leaves `WWW-Authenticate` out of a 401 answered to a script that says so with
/// `X-Requested-With: XMLHttpRequest` (the dashboard does): with the header, browsers put up
/// their own login prompt over the page instead of letting it show the API's message.
/// Other clients (curl, commctl) keep getting the challenge.
pub async fn no_browser_prompt(req: Request, next: Next) -> Response {
    let scripted = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v == HeaderValue::from_static("XMLHttpRequest"));
    let mut resp = next.run(req).await;
    if scripted && resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    resp
}
