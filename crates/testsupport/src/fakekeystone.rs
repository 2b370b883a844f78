//! A fake OpenStack Keystone v3 identity service on loopback, over HTTPS, for tests of the
//! Keystone authentication plugins. It serves the two calls they make, on the real paths with
//! the real shapes and status codes:
//!
//! | call | answer |
//! |---|---|
//! | `POST /v3/auth/tokens` with the password method | `201` + `X-Subject-Token` and `{"token": {...}}`; `401` for wrong credentials |
//! | `GET /v3/auth/tokens` with `X-Auth-Token` and `X-Subject-Token` | `200` + `{"token": {...}}`; `401` when `X-Auth-Token` is not valid; `404` when the subject token is unknown |
//!
//! The token body holds `user` (`id`, `name`, `domain`), `roles` (`[{"id", "name"}]`),
//! `methods`, `issued_at` and `expires_at`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::pki::TestPki;

#[derive(Default)]
struct Inner {
    /// (domain, name) → (password, roles).
    users: HashMap<(String, String), (String, Vec<String>)>,
    /// token → (domain, name).
    tokens: HashMap<String, (String, String)>,
    /// Requests served (method and path).
    requests: Vec<String>,
}

/// The running fake; dropping it stops the server.
pub struct FakeKeystone {
    state: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    pki: TestPki,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"code": 401, "title": "Unauthorized",
            "message": "The request you have made requires authentication."}})),
    )
        .into_response()
}

fn token_body(domain: &str, name: &str, roles: &[String]) -> Value {
    let now = chrono::Utc::now();
    json!({"token": {
        "methods": ["password"],
        "user": {"id": format!("{name}-id"), "name": name,
                 "domain": {"id": domain.to_lowercase(), "name": domain}},
        "roles": roles.iter().map(|r| json!({"id": format!("{r}-id"), "name": r})).collect::<Vec<_>>(),
        "issued_at": now.to_rfc3339(),
        "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
    }})
}

async fn issue(State(st): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
    st.requests.push("POST /v3/auth/tokens".into());
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": 400, "title": "Bad Request",
                "message": "Expecting to find auth in request body."}})),
        )
            .into_response();
    };
    let id = &v["auth"]["identity"];
    if id["methods"] != json!(["password"]) {
        return unauthorized();
    }
    let user = &id["password"]["user"];
    let key = (
        user["domain"]["name"].as_str().unwrap_or("").to_string(),
        user["name"].as_str().unwrap_or("").to_string(),
    );
    let password = user["password"].as_str().unwrap_or("");
    let Some((want, roles)) = st.users.get(&key).cloned() else {
        return unauthorized();
    };
    if want != password {
        return unauthorized();
    }
    let token = format!("gAAAA{}", uuid::Uuid::new_v4().simple());
    st.tokens.insert(token.clone(), key.clone());
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(token_body(&key.0, &key.1, &roles)),
    )
        .into_response();
    resp.headers_mut()
        .insert("x-subject-token", token.parse().expect("token is ASCII"));
    resp
}

async fn validate(State(st): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
    st.requests.push("GET /v3/auth/tokens".into());
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !st.tokens.contains_key(h("x-auth-token")) {
        return unauthorized();
    }
    let Some((domain, name)) = st.tokens.get(h("x-subject-token")).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": 404, "title": "Not Found",
                "message": "Could not find token."}})),
        )
            .into_response();
    };
    let roles = st
        .users
        .get(&(domain.clone(), name.clone()))
        .map(|u| u.1.clone())
        .unwrap_or_default();
    (
        StatusCode::OK,
        axum::Json(token_body(&domain, &name, &roles)),
    )
        .into_response()
}

impl FakeKeystone {
    /// Starts the fake on `127.0.0.1:<free port>` with a certificate from a fresh CA.
    pub fn start() -> FakeKeystone {
        let pki = TestPki::generate("fake keystone CA");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v3/auth/tokens", post(issue).get(validate))
            .with_state(state.clone());
        let (cert, key) = (pki.server_cert_path(), pki.server_key_path());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the fake Keystone");
            rt.block_on(async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .expect("fake Keystone TLS configuration");
                let server = axum_server::from_tcp_rustls(listener, config)
                    .expect("serve on the bound listener");
                tokio::select! {
                    r = server.serve(app.into_make_service()) => {
                        if let Err(e) = r {
                            eprintln!("fake Keystone on {addr}: {e}");
                        }
                    }
                    _ = stopped => {}
                }
            });
        });
        FakeKeystone {
            state,
            addr,
            pki,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The v3 endpoint, `https://127.0.0.1:PORT/v3`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/v3", self.addr.port())
    }

    /// The CA that signed the fake's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.pki.ca_path()
    }

    /// Adds a user in `domain` with a password and Keystone role names.
    pub fn add_user(&self, domain: &str, name: &str, password: &str, roles: &[&str]) {
        self.state.lock().unwrap().users.insert(
            (domain.into(), name.into()),
            (
                password.into(),
                roles.iter().map(|r| r.to_string()).collect(),
            ),
        );
    }

    /// Issues a token for an existing user, as a password login would.
    pub fn issue_token(&self, domain: &str, name: &str) -> String {
        let token = format!("gAAAA{}", uuid::Uuid::new_v4().simple());
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.clone(), (domain.into(), name.into()));
        token
    }

    /// The requests served so far (`METHOD /path`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeKeystone {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
