//! The Keystone plugins: credentials checked by an OpenStack Keystone v3 identity service.
//!
//! * `keystonepasswordauth` (`url`, `domain` default `Default`): HTTP basic credentials are
//!   checked with `POST {url}/auth/tokens` and the password method. They are good iff Keystone
//!   answers `201 Created` with an `X-Subject-Token` header (the original only looked at the
//!   header; we check the status too).
//! * `keystonetokenauth` (`url`): the `X-Auth-Token` header is validated the Keystone v3 way,
//!   `GET {url}/auth/tokens` with the token as both `X-Auth-Token` and `X-Subject-Token` (a
//!   token may validate itself), good iff Keystone answers `200` with the token's user.
//!
//! `url` is Keystone's v3 endpoint (`https://keystone:5000/v3`); a URL already ending in
//! `/auth/tokens`, as the original's examples wrote it, is taken as is. TLS is verified, with
//! `ca_path` naming a PEM bundle of the CAs to trust instead of the system's. Roles come from
//! the Keystone roles of the token (`roles`: Keystone role → our role, `default_role`).
//! Results are remembered for [`KEYSTONE_CACHE_TTL`] under a keyed digest of the credentials
//! (never the credentials). When Keystone cannot be reached or answers with a server error,
//! the request is answered 503: a Keystone outage never lets anyone in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::{Identity, Outcome, RoleMap, Throttle, ThrottleKey, basic_credentials, keyed_digest};

/// How long a Keystone answer is remembered (not renewed by use: Keystone may revoke).
pub const KEYSTONE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Bound on one call to Keystone.
const KEYSTONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on remembered answers (the cache is cleared when full).
const CACHE_MAX: usize = 10_000;

/// What both plugins share: the endpoint, the HTTPS client, the role map and the cache.
struct Keystone {
    plugin: &'static str,
    tokens_url: String,
    http: reqwest::Client,
    roles: RoleMap,
    cache_key: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl Keystone {
    /// Parses `url`, `ca_path`, `roles`, `default_role` and the plugin's `extra` options
    /// (returned by name).
    fn from_options(
        plugin: &'static str,
        options: &Map<String, Value>,
        extra: &[&str],
    ) -> Result<(Self, HashMap<String, String>), String> {
        let mut options = options.clone();
        let roles = RoleMap::take(plugin, &mut options)?;
        let mut url = None;
        let mut ca_path = None;
        let mut rest = HashMap::new();
        for (k, v) in &options {
            let text = v
                .as_str()
                .ok_or_else(|| format!("{plugin}: {k} must be a string"))?;
            match k.as_str() {
                "url" => url = Some(text.to_string()),
                "ca_path" => ca_path = Some(text.to_string()),
                k if extra.contains(&k) => {
                    rest.insert(k.to_string(), text.to_string());
                }
                other => {
                    let mut known = vec!["url", "ca_path", "roles", "default_role"];
                    known.extend_from_slice(extra);
                    return Err(format!(
                        "{plugin}: unknown option {other:?} (options: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        let url = url.ok_or_else(|| {
            format!("{plugin}: give url, Keystone's v3 endpoint (https://keystone:5000/v3)")
        })?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "{plugin}: url {url:?} must start with https:// or http://"
            ));
        }
        let base = url.trim_end_matches('/');
        let tokens_url = if base.ends_with("/auth/tokens") {
            base.to_string()
        } else {
            format!("{base}/auth/tokens")
        };
        let mut b = reqwest::Client::builder()
            .timeout(KEYSTONE_TIMEOUT)
            .connect_timeout(KEYSTONE_TIMEOUT)
            .user_agent(concat!("commissaire/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &ca_path {
            // The operator's configuration names this file, not an API user.
            let pem = std::fs::read(path).map_err(|e| format!("{plugin}: ca_path {path}: {e}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{plugin}: ca_path {path}: not a PEM bundle: {e}"))?;
            if certs.is_empty() {
                return Err(format!(
                    "{plugin}: ca_path {path}: holds no PEM certificate"
                ));
            }
            b = b.tls_certs_only(certs);
        }
        let http = b
            .build()
            .map_err(|e| format!("{plugin}: setting up HTTPS: {e}"))?;
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        Ok((
            Keystone {
                plugin,
                tokens_url,
                http,
                roles,
                cache_key,
                cache: Mutex::new(HashMap::new()),
            },
            rest,
        ))
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Identity> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(digest)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(who, _)| who.clone())
    }

    fn remember(&self, digest: [u8; 32], who: &Identity) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, (who.clone(), Instant::now() + KEYSTONE_CACHE_TTL));
    }

    /// The identity in a token body (`{"token": {"user": {"name"}, "roles": [{"name"}]}}`).
    fn identity(&self, body: &Value, fallback_user: &str) -> Identity {
        let token = &body["token"];
        let user = token["user"]["name"]
            .as_str()
            .unwrap_or(fallback_user)
            .to_string();
        let names: Vec<&str> = token["roles"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        Identity::user(user, self.roles.role_of(names))
    }

    fn unreachable(&self, e: &reqwest::Error) -> Outcome {
        // The error names the URL, never the credentials (they are in the body or headers).
        tracing::warn!(plugin = self.plugin, error = %e, "Keystone cannot be reached");
        Outcome::Unavailable(
            "the identity service (Keystone) cannot be reached; try again later".into(),
        )
    }

    fn server_error(&self, status: StatusCode) -> Outcome {
        tracing::warn!(plugin = self.plugin, %status, "Keystone answered with an error");
        Outcome::Unavailable(format!(
            "the identity service (Keystone) answered {status}; try again later"
        ))
    }
}

/// `keystonepasswordauth`: HTTP basic credentials checked by Keystone's password method.
pub struct KeystonePasswordAuth {
    ks: Keystone,
    domain: String,
    /// Failed-login delays per source address and user name, as for `httpbasicauth`: this
    /// plugin must not become a fast password-guessing proxy in front of Keystone.
    throttle: Throttle,
}

impl KeystonePasswordAuth {
    /// Builds the plugin from `url`, `domain`, `ca_path`, `roles`, `default_role`.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let (ks, rest) = Keystone::from_options("keystonepasswordauth", options, &["domain"])?;
        Ok(KeystonePasswordAuth {
            ks,
            domain: rest
                .get("domain")
                .cloned()
                .unwrap_or_else(|| "Default".into()),
            throttle: Throttle::default(),
        })
    }

    pub(super) async fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Outcome {
        let Some((user, password)) = basic_credentials(headers) else {
            return Outcome::NotMine;
        };
        let digest = keyed_digest(&self.ks.cache_key, &[user.as_bytes(), password.as_bytes()]);
        if let Some(who) = self.ks.cached(&digest) {
            return Outcome::Allowed(who);
        }
        let mut keys = vec![ThrottleKey::User(keyed_digest(
            &self.ks.cache_key,
            &[b"user", user.as_bytes()],
        ))];
        keys.extend(peer.map(ThrottleKey::Addr));
        let delay = self.throttle.begin(&keys);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let outcome = self.ask(&user, &password, digest).await;
        match &outcome {
            Outcome::Allowed(_) => self.throttle.finish(&keys, true),
            Outcome::Rejected => self.throttle.finish(&keys, false),
            _ => self.throttle.abandon(&keys),
        }
        outcome
    }

    /// The password check itself: one `POST /auth/tokens`.
    async fn ask(&self, user: &str, password: &str, digest: [u8; 32]) -> Outcome {
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": self.domain}, "password": password}}}}});
        let resp = match self
            .ks
            .http
            .post(&self.ks.tokens_url)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.ks.unreachable(&e),
        };
        let status = resp.status();
        let has_token = resp.headers().contains_key("x-subject-token");
        match status {
            StatusCode::CREATED if has_token => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let who = self.ks.identity(&body, user);
                self.ks.remember(digest, &who);
                Outcome::Allowed(who)
            }
            s if s.is_server_error() => self.ks.server_error(s),
            _ => Outcome::Rejected,
        }
    }
}

/// `keystonetokenauth`: the `X-Auth-Token` header validated by Keystone.
pub struct KeystoneTokenAuth {
    ks: Keystone,
}

impl KeystoneTokenAuth {
    /// Builds the plugin from `url`, `ca_path`, `roles`, `default_role`.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let (ks, _) = Keystone::from_options("keystonetokenauth", options, &[])?;
        Ok(KeystoneTokenAuth { ks })
    }

    pub(super) async fn check(&self, headers: &HeaderMap) -> Outcome {
        let Some(token) = headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Outcome::NotMine;
        };
        let digest = keyed_digest(&self.ks.cache_key, &[token.as_bytes()]);
        if let Some(who) = self.ks.cached(&digest) {
            return Outcome::Allowed(who);
        }
        let resp = match self
            .ks
            .http
            .get(&self.ks.tokens_url)
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.ks.unreachable(&e),
        };
        match resp.status() {
            StatusCode::OK => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let Some(_) = body["token"]["user"]["name"].as_str() else {
                    return Outcome::Rejected;
                };
                let who = self.ks.identity(&body, "");
                self.ks.remember(digest, &who);
                Outcome::Allowed(who)
            }
            s if s.is_server_error() => self.ks.server_error(s),
            _ => Outcome::Rejected,
        }
    }
}
