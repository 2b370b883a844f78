//! Authentication and authorization: plugins tried in order, first success wins, as in the
//! original; then the caller's role is checked against the route's permission
//! ([`crate::authz`]), and every change and refused attempt is written to the audit log.
//!
//! Plugins (names also accepted with the `commissaire_http.authentication.` and
//! `commissaire.authentication.` prefixes; `docs/access.md` is the operator's reference):
//!
//! * `httpbasicauth`: users with bcrypt hashes (and an optional `role`) from a JSON file
//!   (`filepath`) and/or inline (`users`);
//! * `apitokenauth`: `Authorization: Bearer <token>` against a file of SHA-256 digests;
//! * `httpauthclientcert`: the verified TLS client certificate's subject CN ([`clientcert`]);
//! * `keystonepasswordauth`, `keystonetokenauth`: Keystone v3 ([`keystone`]);
//! * `openshiftbearertokenauth` (alias `kubernetestokenauth`): `Authorization: Bearer <token>`
//!   checked with a TokenReview against a Kubernetes/OpenShift API (options as for container
//!   managers: `server_url`, `token` of the reviewing account, `ca_path`, `certificate_path` +
//!   `certificate_key_path`, `insecure_skip_tls_verify`); the user is the review's username,
//!   the role comes from its groups.
//!
//! Registration tokens (`cmsreg_...`, see `domain::registration`) are checked before the
//! plugins and may only register a host.
//!
//! bcrypt is slow by design, so it runs on the blocking pool, and a successful check is
//! remembered for a short time under a keyed digest of the credentials (never the password or
//! token itself) so a client repeating the same good credentials does not pay bcrypt, a
//! TokenReview or a Keystone call on every request. The basic cache is dropped whenever the
//! users file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use domain::hosts::RegistrationScope;
use hmac::{Hmac, KeyInit, Mac};
use model::{AuditRecord, Role};
use rand::{Rng, RngCore};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use store::SharedStore;

pub mod clientcert;
pub mod keystone;

use crate::authz;
use crate::config::PluginConfig;
use crate::error::ApiError;

/// How long verified credentials are remembered after their last use.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// bcrypt checks running at once (it is CPU-bound: more would only queue on the cores).
const BCRYPT_SLOTS: usize = 2;
/// Bound on remembered credentials (the cache is cleared when full).
const CACHE_MAX: usize = 10_000;
/// Failed logins per source address or user name answered without delay.
const FREE_FAILURES: u32 = 3;
/// Delay after the first failure beyond the free ones; doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(100);
/// Longest delay.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// A source address or user name is forgotten this long after its last failure.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Bound on the source addresses and user names remembered for throttling.
const THROTTLE_MAX: usize = 4096;

/// What failed logins are counted under: a source address, or (a keyed digest of) a user
/// name, so an entry has a fixed size whatever name a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Addr(std::net::IpAddr),
    User([u8; 32]),
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    /// Failed logins, decaying only by being forgotten after [`FAILURE_MEMORY`].
    count: u32,
    /// Checks under way now: concurrent guesses count as failures until they finish.
    pending: u32,
    last: Instant,
}

/// Exponential delays for failed logins per source address and per user name, in bounded
/// memory: at most [`THROTTLE_MAX`] keys; when full, forgotten entries go first, then the
/// least recently failed one.
#[derive(Default)]
struct Throttle {
    entries: Mutex<HashMap<ThrottleKey, Failures>>,
}

impl Throttle {
    /// Registers a check under `keys` and returns how long it must wait first.
    fn begin(&self, keys: &[ThrottleKey]) -> Duration {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut worst = 0u32;
        for k in keys {
            if !map.contains_key(k) && map.len() >= THROTTLE_MAX {
                map.retain(|_, f| f.pending > 0 || now.duration_since(f.last) < FAILURE_MEMORY);
                if map.len() >= THROTTLE_MAX
                    && let Some(oldest) = map
                        .iter()
                        .filter(|(_, f)| f.pending == 0)
                        .min_by_key(|(_, f)| f.last)
                        .map(|(k, _)| *k)
                {
                    map.remove(&oldest);
                }
            }
            let e = map.entry(*k).or_insert(Failures {
                count: 0,
                pending: 0,
                last: now,
            });
            if now.duration_since(e.last) >= FAILURE_MEMORY && e.pending == 0 {
                e.count = 0;
            }
            worst = worst.max(e.count + e.pending);
            e.pending += 1;
        }
        delay_for(worst)
    }

    /// Ends a check begun with [`Throttle::begin`]: a success clears the keys, a failure
    /// counts against them.
    fn finish(&self, keys: &[ThrottleKey], ok: bool) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for k in keys {
            if let Some(e) = map.get_mut(k) {
                e.pending = e.pending.saturating_sub(1);
                if ok {
                    e.count = 0;
                } else {
                    e.count = e.count.saturating_add(1);
                    e.last = now;
                }
                if e.count == 0 && e.pending == 0 {
                    map.remove(k);
                }
            }
        }
    }

    /// Ends a check that could not decide (the service that checks was unreachable): it
    /// counts neither as a failure nor as a success.
    fn abandon(&self, keys: &[ThrottleKey]) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(e) = map.get_mut(k) {
                e.pending = e.pending.saturating_sub(1);
                if e.count == 0 && e.pending == 0 {
                    map.remove(k);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The wait before a check that follows `failures` failures (counting ones under way).
fn delay_for(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16);
    (BASE_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

/// The cost parameter of a bcrypt hash (`$2b$12$...` → 12).
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// What a change was about when the path does not say it (self-registration: the host's
/// address), put in response extensions by the handler for the audit log.
#[derive(Clone, Debug)]
pub struct AuditTarget(pub String);

/// The authenticated caller, put in request extensions for handlers and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name (for a registration token: `registration-token/<id>`).
    pub user: String,
    /// What the caller may do.
    pub role: Role,
    /// Set when the caller presented a registration token: it may only register a host,
    /// within this scope.
    pub registration: Option<RegistrationScope>,
}

impl Identity {
    /// An ordinary user with a role.
    pub fn user(user: impl Into<String>, role: Role) -> Self {
        Identity {
            user: user.into(),
            role,
            registration: None,
        }
    }
}

/// The outcome of one plugin.
enum Outcome {
    Allowed(Identity),
    Rejected,
    /// The service that checks these credentials cannot be reached: the request is answered
    /// 503 unless a later plugin accepts it (never a silent allow).
    Unavailable(String),
    /// The request carries nothing this plugin understands.
    NotMine,
}

/// How a plugin maps its identities to roles: options `roles` (a JSON object from a name the
/// plugin knows — user, certificate CN, Keystone role, Kubernetes group — to a role) and
/// `default_role` (the role of an identity no entry names; `admin` when unset, as every
/// authenticated user could do everything before roles existed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleMap {
    names: HashMap<String, Role>,
    default: Role,
}

impl Default for RoleMap {
    fn default() -> Self {
        RoleMap {
            names: HashMap::new(),
            default: Role::Admin,
        }
    }
}

impl RoleMap {
    /// Takes `roles` and `default_role` out of `options` (they are then not the plugin's
    /// own options). From the command line `roles` is a JSON string.
    pub fn take(plugin: &str, options: &mut Map<String, Value>) -> Result<Self, String> {
        let mut map = RoleMap::default();
        if let Some(v) = options.remove("default_role") {
            let name = v
                .as_str()
                .ok_or_else(|| format!("{plugin}: default_role must be a string"))?;
            map.default = Role::parse(name).map_err(|e| format!("{plugin}: default_role: {e}"))?;
        }
        if let Some(v) = options.remove("roles") {
            let v = match v {
                Value::String(s) => serde_json::from_str(&s)
                    .map_err(|e| format!("{plugin}: roles is not valid JSON: {e}"))?,
                other => other,
            };
            let Value::Object(entries) = v else {
                return Err(format!(
                    "{plugin}: roles must be an object like {{\"name\": \"operator\"}}"
                ));
            };
            for (name, role) in entries {
                let role = role
                    .as_str()
                    .ok_or_else(|| format!("{plugin}: roles.{name} must be a string"))
                    .and_then(|r| {
                        Role::parse(r).map_err(|e| format!("{plugin}: roles.{name}: {e}"))
                    })?;
                map.names.insert(name, role);
            }
        }
        Ok(map)
    }

    /// The role of an identity known by `names` (e.g. its groups): the highest role any of
    /// them maps to, else the default.
    pub fn role_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Role {
        names
            .into_iter()
            .filter_map(|n| self.names.get(n).copied())
            .max()
            .unwrap_or(self.default)
    }
}

/// The cache key of some credentials: an HMAC under a per-process random key, so the cache
/// never holds (or lets anyone recompute) the secret itself. Parts are separated by a NUL.
fn keyed_digest(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(&[0]);
        }
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A user table: name → (bcrypt hash, role).
type Users = HashMap<String, (String, Role)>;

fn parse_users(v: &Value, origin: &str) -> Result<Users, String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "{origin}: users must be an object like {{\"alice\": {{\"hash\": \"$2b$...\"}}}}"
        ));
    };
    let mut users = Users::new();
    for (name, entry) in map {
        let hash = entry
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{origin}: user {name:?} needs a \"hash\" string"))?;
        if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return Err(format!(
                "{origin}: user {name:?}: the hash must be bcrypt ($2a$, $2b$ or $2y$)"
            ));
        }
        // Users written before roles existed could do everything: they stay admins.
        let role = match entry.get("role") {
            None => Role::Admin,
            Some(r) => r
                .as_str()
                .ok_or_else(|| format!("{origin}: user {name:?}: role must be a string"))
                .and_then(|r| {
                    Role::parse(r).map_err(|e| format!("{origin}: user {name:?}: {e}"))
                })?,
        };
        users.insert(name.clone(), (hash.to_string(), role));
    }
    Ok(users)
}

fn read_users_file(path: &Path) -> Result<Users, String> {
    let origin = format!("users file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{origin}: not valid JSON: {e}"))?;
    parse_users(&v, &origin)
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct UsersState {
    users: Users,
    stamp: Option<(SystemTime, u64)>,
    /// Digest of credentials → when the memory of their success expires.
    verified: HashMap<[u8; 32], Instant>,
}

/// HTTP basic authentication against bcrypt hashes.
pub struct BasicAuth {
    filepath: Option<PathBuf>,
    inline: Users,
    state: Mutex<UsersState>,
    cache_key: [u8; 32],
    /// Hashes to verify against for unknown users, one per bcrypt cost in use, so an unknown
    /// user costs the same work as a known one (cost → hash of a random password).
    /// (Boxed, with the throttle, to keep [`Plugin`]'s variants of similar size.)
    dummy_hashes: Box<Mutex<HashMap<u32, String>>>,
    /// Failed-login delays per source address and user name.
    throttle: Box<Throttle>,
    /// Bounds bcrypt checks running at once. Requests that waited here look in the cache
    /// again first, so a burst of requests with the same new credentials costs one bcrypt,
    /// not one per request.
    bcrypt_slots: tokio::sync::Semaphore,
    /// bcrypt checks run so far (for the tests of the cache).
    bcrypt_runs: std::sync::atomic::AtomicU64,
}

impl BasicAuth {
    /// Builds the plugin from its options (`filepath`, `users`). A missing or invalid users
    /// file is an error at start-up, not a silent lockout.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let mut filepath = None;
        let mut inline = Users::new();
        for (k, v) in options {
            match k.as_str() {
                "filepath" => {
                    let p = v
                        .as_str()
                        .ok_or("httpbasicauth: filepath must be a string")?;
                    filepath = Some(PathBuf::from(p));
                }
                "users" => {
                    let v = match v {
                        // From the command line the value is a JSON string.
                        Value::String(s) => serde_json::from_str(s)
                            .map_err(|e| format!("httpbasicauth: users is not valid JSON: {e}"))?,
                        other => other.clone(),
                    };
                    inline = parse_users(&v, "httpbasicauth users")?;
                }
                other => {
                    return Err(format!(
                        "httpbasicauth: unknown option {other:?} (options: filepath, users)"
                    ));
                }
            }
        }
        let (users, stamp) = match &filepath {
            Some(p) => (read_users_file(p)?, file_stamp(p)),
            None => (Users::new(), None),
        };
        if users.is_empty() && inline.is_empty() {
            return Err("httpbasicauth: no users configured (give filepath or users)".into());
        }
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        Ok(BasicAuth {
            filepath,
            inline,
            state: Mutex::new(UsersState {
                users,
                stamp,
                verified: HashMap::new(),
            }),
            cache_key,
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_SLOTS),
            bcrypt_runs: std::sync::atomic::AtomicU64::new(0),
            dummy_hashes: Box::new(Mutex::new(HashMap::new())),
            throttle: Box::default(),
        })
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        keyed_digest(&self.cache_key, &[user.as_bytes(), password.as_bytes()])
    }

    /// Looks up the hash for `user`, reloading the users file if it changed. Also returns the
    /// highest bcrypt cost among all users: an unknown user is checked at that cost.
    fn hash_for(&self, user: &str) -> (Option<(String, Role)>, u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &self.filepath {
            let stamp = file_stamp(p);
            if stamp != st.stamp {
                match read_users_file(p) {
                    Ok(users) => st.users = users,
                    Err(e) => {
                        tracing::warn!(error = %e, "users file unreadable; its users are refused until it is fixed");
                        st.users.clear();
                    }
                }
                st.stamp = stamp;
                st.verified.clear();
            }
        }
        let cost = st
            .users
            .values()
            .chain(self.inline.values())
            .filter_map(|(h, _)| bcrypt_cost(h))
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let hash = st
            .users
            .get(user)
            .or_else(|| self.inline.get(user))
            .cloned();
        (hash, cost)
    }

    /// A hash of a random password at `cost`, made once per cost (on the blocking pool: at a
    /// real cost it takes as long as a check).
    async fn dummy_hash(&self, cost: u32) -> String {
        if let Some(h) = self
            .dummy_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cost)
        {
            return h.clone();
        }
        let mut pw = [0u8; 24];
        rand::rng().fill_bytes(&mut pw);
        let made = tokio::task::spawn_blocking(move || bcrypt::hash(hex::encode(pw), cost))
            .await
            .ok()
            .and_then(Result::ok);
        // A hash that cannot be made still fails every check; the unknown user is refused.
        let h = made.unwrap_or_else(|| {
            "$2b$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinv".into()
        });
        self.dummy_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cost, h.clone());
        h
    }

    /// Whether these credentials were verified recently. A hit renews the memory, so a client
    /// that keeps using them never meets an expiry (and the burst of bcrypt checks that would
    /// come with it); changing the users file still forgets everything at once.
    fn remembered(&self, digest: &[u8; 32]) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match st.verified.get_mut(digest) {
            Some(exp) if *exp > now => {
                *exp = now + CACHE_TTL;
                true
            }
            _ => false,
        }
    }

    async fn check(&self, headers: &HeaderMap, peer: Option<std::net::IpAddr>) -> Outcome {
        let Some((user, password)) = basic_credentials(headers) else {
            return Outcome::NotMine;
        };
        let (entry, cost) = self.hash_for(&user);
        let (hash, role) = match entry {
            Some((h, r)) => (Some(h), r),
            None => (None, Role::Viewer),
        };
        let digest = self.digest(&user, &password);
        // Remembered good credentials never wait, whatever failed before.
        if hash.is_some() && self.remembered(&digest) {
            return Outcome::Allowed(Identity::user(user, role));
        }
        let mut keys = vec![ThrottleKey::User(keyed_digest(
            &self.cache_key,
            &[b"user", user.as_bytes()],
        ))];
        keys.extend(peer.map(ThrottleKey::Addr));
        let delay = self.throttle.begin(&keys);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ok = self.verify(&user, password, hash, cost, digest).await;
        self.throttle.finish(&keys, ok);
        if ok {
            Outcome::Allowed(Identity::user(user, role))
        } else {
            Outcome::Rejected
        }
    }

    /// The bcrypt check itself; unknown users are checked against a dummy hash of the same
    /// cost so that they answer in the same time as known ones.
    async fn verify(
        &self,
        _user: &str,
        password: String,
        hash: Option<String>,
        cost: u32,
        digest: [u8; 32],
    ) -> bool {
        let _slot = self.bcrypt_slots.acquire().await;
        if hash.is_some() && self.remembered(&digest) {
            return true;
        }
        let known = hash.is_some();
        let hash = match hash {
            Some(h) => h,
            None => self.dummy_hash(cost).await,
        };
        self.bcrypt_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.verified.len() >= CACHE_MAX {
                st.verified.clear();
            }
            st.verified.insert(digest, Instant::now() + CACHE_TTL);
        }
        ok && known
    }
}

/// Bearer tokens checked by the Kubernetes/OpenShift API (TokenReview).
pub struct BearerTokenAuth {
    api: kube::KubeClient,
    /// Kubernetes groups → roles.
    roles: RoleMap,
    cache_key: [u8; 32],
    /// Digest of a token → (identity, expiry).
    verified: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl BearerTokenAuth {
    /// Builds the plugin from its options; a missing `server_url` or an unreadable CA or
    /// certificate file is a start-up error.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let mut options = options.clone();
        let roles = RoleMap::take("openshiftbearertokenauth", &mut options)?;
        let opts: std::collections::BTreeMap<String, Value> = options
            .iter()
            .map(|(k, v)| {
                // Options given on the command line are strings.
                let v = match (k.as_str(), v) {
                    ("insecure_skip_tls_verify", Value::String(s)) => {
                        Value::Bool(matches!(s.as_str(), "true" | "yes" | "1"))
                    }
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        for k in opts.keys() {
            if !matches!(
                k.as_str(),
                "server_url"
                    | "token"
                    | "ca_path"
                    | "certificate_path"
                    | "certificate_key_path"
                    | "insecure_skip_tls_verify"
            ) {
                return Err(format!(
                    "openshiftbearertokenauth: unknown option {k:?} (options: server_url, token, ca_path, certificate_path, certificate_key_path, insecure_skip_tls_verify, roles, default_role)"
                ));
            }
        }
        // These paths come from the operator's configuration, not from the API, so they are
        // read here as given; the client only ever sees their PEM text.
        let mut opts = opts;
        for (path_key, text_key) in [
            ("ca_path", "ca"),
            ("certificate_path", "certificate"),
            ("certificate_key_path", "certificate_key"),
        ] {
            if let Some(v) = opts.remove(path_key) {
                let path = v.as_str().ok_or_else(|| {
                    format!("openshiftbearertokenauth: {path_key} must be a string")
                })?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("openshiftbearertokenauth: {path_key} {path}: {e}"))?;
                opts.insert(text_key.to_string(), Value::String(text));
            }
        }
        let api = kube::KubeClient::from_options(&opts)
            .map_err(|e| format!("openshiftbearertokenauth: {e}"))?;
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        Ok(BearerTokenAuth {
            api,
            roles,
            cache_key,
            verified: Mutex::new(HashMap::new()),
        })
    }

    async fn check(&self, headers: &HeaderMap) -> Outcome {
        let Some(token) = bearer_token(headers) else {
            return Outcome::NotMine;
        };
        let digest = keyed_digest(&self.cache_key, &[token.as_bytes()]);
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((who, exp)) = cache.get(&digest)
                && *exp > Instant::now()
            {
                return Outcome::Allowed(who.clone());
            }
        }
        match self.api.review_token(&token).await {
            Ok(Some((user, groups))) => {
                let role = self.roles.role_of(groups.iter().map(String::as_str));
                let who = Identity::user(user, role);
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(digest, (who.clone(), Instant::now() + CACHE_TTL));
                Outcome::Allowed(who)
            }
            Ok(None) => Outcome::Rejected,
            Err(e) => {
                // The error never contains the token under review.
                tracing::warn!(error = %e, "cannot review a bearer token");
                Outcome::Unavailable(
                    "the Kubernetes API that checks bearer tokens cannot be reached; try again later"
                        .into(),
                )
            }
        }
    }
}

/// Static API tokens (`apitokenauth`): `Authorization: Bearer <token>` against a tokens file
/// holding only SHA-256 digests of the tokens, like users.json holds only bcrypt hashes:
/// `{"ci-bot": {"hash": "sha256:<64 hex digits>", "role": "operator"}}`. A token is a long
/// random secret (not a password a person chose), so a fast digest does not make guessing
/// easier, and each request costs one SHA-256 instead of a bcrypt. The file is read again when
/// it changes.
pub struct TokenFileAuth {
    path: PathBuf,
    /// (file stamp, digest → (name, role)).
    state: Mutex<(Option<(SystemTime, u64)>, Tokens)>,
}

/// A tokens file's content: SHA-256 digest of a token → (its name, its role).
type Tokens = HashMap<[u8; 32], (String, Role)>;

/// Reads a tokens file.
fn read_tokens_file(path: &Path) -> Result<Tokens, String> {
    let origin = format!("tokens file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{origin}: not valid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err(format!(
            "{origin}: must be an object like {{\"ci-bot\": {{\"hash\": \"sha256:...\", \"role\": \"operator\"}}}}"
        ));
    };
    let mut out = HashMap::new();
    for (name, entry) in map {
        let hash = entry
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{origin}: token {name:?} needs a \"hash\" string"))?;
        let digest: [u8; 32] = hash
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "{origin}: token {name:?}: hash must be \"sha256:\" and 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"
                )
            })?;
        let role = match entry.get("role") {
            None => Role::Admin,
            Some(r) => r
                .as_str()
                .ok_or_else(|| format!("{origin}: token {name:?}: role must be a string"))
                .and_then(|r| {
                    Role::parse(r).map_err(|e| format!("{origin}: token {name:?}: {e}"))
                })?,
        };
        if out.insert(digest, (name.clone(), role)).is_some() {
            return Err(format!(
                "{origin}: token {name:?} has the same hash as another token"
            ));
        }
    }
    Ok(out)
}

impl TokenFileAuth {
    /// Builds the plugin from its options (`filepath`); a missing or invalid file is a
    /// start-up error.
    pub fn from_options(options: &Map<String, Value>) -> Result<Self, String> {
        let mut path = None;
        for (k, v) in options {
            match k.as_str() {
                "filepath" => {
                    path = Some(PathBuf::from(
                        v.as_str()
                            .ok_or("apitokenauth: filepath must be a string")?,
                    ));
                }
                other => {
                    return Err(format!(
                        "apitokenauth: unknown option {other:?} (options: filepath)"
                    ));
                }
            }
        }
        let path = path.ok_or("apitokenauth: give filepath (the tokens file)")?;
        let tokens = read_tokens_file(&path).map_err(|e| format!("apitokenauth: {e}"))?;
        Ok(TokenFileAuth {
            state: Mutex::new((file_stamp(&path), tokens)),
            path,
        })
    }

    fn check(&self, headers: &HeaderMap) -> Outcome {
        let Some(token) = bearer_token(headers) else {
            return Outcome::NotMine;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = file_stamp(&self.path);
        if stamp != st.0 {
            st.1 = read_tokens_file(&self.path).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "tokens file unreadable; its tokens are refused until it is fixed");
                HashMap::new()
            });
            st.0 = stamp;
        }
        match st.1.get(&digest) {
            Some((name, role)) => Outcome::Allowed(Identity::user(name.clone(), *role)),
            None => Outcome::Rejected,
        }
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Extracts `(user, password)` from an `Authorization: Basic` header. The password may
/// contain `:`; only the first one separates it from the user.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// One configured plugin.
pub enum Plugin {
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// Kubernetes/OpenShift bearer tokens.
    Bearer(BearerTokenAuth),
    /// Static API tokens from a tokens file.
    Tokens(TokenFileAuth),
    /// TLS client certificates.
    ClientCert(clientcert::ClientCertAuth),
    /// Keystone user name and password (HTTP basic credentials checked by Keystone).
    KeystonePassword(keystone::KeystonePasswordAuth),
    /// Keystone tokens (`X-Auth-Token`).
    KeystoneToken(keystone::KeystoneTokenAuth),
}

/// The plugin names, without prefix, for messages.
pub const PLUGIN_NAMES: &str = "httpbasicauth, httpauthclientcert, keystonepasswordauth, keystonetokenauth, openshiftbearertokenauth (kubernetestokenauth), apitokenauth";

/// A plugin name without the prefixes the seeds use (`commissaire_http.authentication.` and
/// `commissaire.authentication.`).
pub fn short_name(name: &str) -> &str {
    name.strip_prefix("commissaire_http.authentication.")
        .or_else(|| name.strip_prefix("commissaire.authentication."))
        .unwrap_or(name)
}

impl Plugin {
    /// Builds a plugin from its configuration; unknown names are a start-up error. `tls`
    /// says whether the server checks client certificates (`tls-pemfile` and
    /// `tls-clientverifyfile`), which `httpauthclientcert` needs.
    pub fn from_config(cfg: &PluginConfig, client_certs: bool) -> Result<Plugin, String> {
        match short_name(&cfg.name) {
            "httpbasicauth" => Ok(Plugin::Basic(BasicAuth::from_options(&cfg.options)?)),
            "openshiftbearertokenauth" | "kubernetestokenauth" => {
                Ok(Plugin::Bearer(BearerTokenAuth::from_options(&cfg.options)?))
            }
            "apitokenauth" => Ok(Plugin::Tokens(TokenFileAuth::from_options(&cfg.options)?)),
            "httpauthclientcert" => {
                if !client_certs {
                    return Err("httpauthclientcert: the server must check client certificates: set tls-pemfile and tls-clientverifyfile".into());
                }
                Ok(Plugin::ClientCert(
                    clientcert::ClientCertAuth::from_options(&cfg.options)?,
                ))
            }
            "keystonepasswordauth" => Ok(Plugin::KeystonePassword(
                keystone::KeystonePasswordAuth::from_options(&cfg.options)?,
            )),
            "keystonetokenauth" => Ok(Plugin::KeystoneToken(
                keystone::KeystoneTokenAuth::from_options(&cfg.options)?,
            )),
            other => Err(format!(
                "configuration key \"authentication-plugins\": {other:?} is not an available plugin (available: {PLUGIN_NAMES}; each also with the prefix commissaire_http.authentication. or commissaire.authentication.)"
            )),
        }
    }

    async fn check(
        &self,
        headers: &HeaderMap,
        cert: Option<&PeerCertificate>,
        peer: Option<std::net::IpAddr>,
    ) -> Outcome {
        match self {
            Plugin::Basic(b) => b.check(headers, peer).await,
            Plugin::Bearer(b) => b.check(headers).await,
            Plugin::Tokens(t) => t.check(headers),
            Plugin::ClientCert(c) => c.check(cert),
            Plugin::KeystonePassword(k) => k.check(headers, peer).await,
            Plugin::KeystoneToken(k) => k.check(headers).await,
        }
    }

    fn uses_basic(&self) -> bool {
        matches!(self, Plugin::Basic(_) | Plugin::KeystonePassword(_))
    }
}

/// The verified TLS client certificate of a connection (DER), put in request extensions by
/// the TLS acceptor.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// The authentication layer's state.
pub struct Authenticator {
    plugins: Vec<Plugin>,
    self_auths: Vec<String>,
    /// Open paths: health, metrics and the API description.
    public: Vec<&'static str>,
    /// The store, for registration tokens and the audit log (`None` only in unit tests).
    store: Option<SharedStore>,
    /// Budget for storing audit records of unauthenticated refusals (see
    /// [`ANONYMOUS_AUDIT_RATE`]).
    anonymous_audit: Mutex<(f64, Instant)>,
}

/// Audit records of refused requests without valid credentials are stored at this rate per
/// second at most (bursts of [`ANONYMOUS_AUDIT_BURST`]); beyond it they are only written to the
/// log. Anyone can send such requests, and the stored log is bounded: without this, a flood of
/// bad requests would push every real record out of it (and cost a store write each).
pub const ANONYMOUS_AUDIT_RATE: f64 = 10.0;
/// Burst allowed above [`ANONYMOUS_AUDIT_RATE`].
pub const ANONYMOUS_AUDIT_BURST: f64 = 100.0;

impl Authenticator {
    /// Builds the layer. With no plugins, every request passes (only reachable with
    /// `insecure-no-auth`; the server refuses to start open otherwise).
    pub fn new(plugins: Vec<Plugin>, self_auths: Vec<String>) -> Self {
        Authenticator {
            plugins,
            self_auths,
            public: vec!["/api/v0/status", "/metrics"],
            store: None,
            anonymous_audit: Mutex::new((ANONYMOUS_AUDIT_BURST, Instant::now())),
        }
    }

    /// Sets the store that registration tokens are checked in and audit records written to.
    pub fn with_store(mut self, store: SharedStore) -> Self {
        self.store = Some(store);
        self
    }

    fn is_public(&self, path: &str) -> bool {
        let trimmed = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        self.public.contains(&trimmed)
            || trimmed == "/api/v0/openapi.json"
            || trimmed == "/api/v0/docs"
            || path.starts_with("/api/v0/docs/")
            || self.self_auths.iter().any(|p| p == path || p == trimmed)
    }

    /// Checks a registration token in the store.
    async fn registration(&self, token: &str) -> Outcome {
        let Some(store) = &self.store else {
            return Outcome::Rejected;
        };
        match domain::registration::authenticate(store.as_ref(), token).await {
            Ok(Some(t)) => Outcome::Allowed(Identity {
                user: format!("registration-token/{}", t.id),
                role: Role::Viewer,
                registration: Some(RegistrationScope {
                    token_id: t.id,
                    cluster: t.cluster,
                }),
            }),
            Ok(None) => Outcome::Rejected,
            Err(e) => Outcome::Unavailable(e.to_string()),
        }
    }

    /// Authenticates a request: a registration token, else the plugins in order.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&PeerCertificate>,
        peer: Option<std::net::IpAddr>,
    ) -> Outcome {
        if let Some(token) = bearer_token(headers)
            && domain::registration::is_registration_token(&token)
        {
            return self.registration(&token).await;
        }
        let mut presented = false;
        let mut unavailable = None;
        for p in &self.plugins {
            match p.check(headers, cert, peer).await {
                Outcome::Allowed(who) => return Outcome::Allowed(who),
                Outcome::Rejected => presented = true,
                Outcome::Unavailable(m) => unavailable = Some(m),
                Outcome::NotMine => {}
            }
        }
        match (unavailable, presented) {
            (Some(m), _) => Outcome::Unavailable(m),
            (None, true) => Outcome::Rejected,
            (None, false) => Outcome::NotMine,
        }
    }

    /// Takes one unit of the budget for storing unauthenticated refusals.
    fn anonymous_budget(&self) -> bool {
        let mut b = self
            .anonymous_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * ANONYMOUS_AUDIT_RATE)
            .min(ANONYMOUS_AUDIT_BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Writes an audit record to the store and the log; a failure to store it is logged,
    /// not turned into a failure of the request (which has already been answered).
    async fn audit(
        &self,
        who: Option<&Identity>,
        req: &RequestFacts,
        status: StatusCode,
        target: Option<String>,
    ) {
        let (id, time) = domain::audit::new_id(chrono::Utc::now());
        let outcome = match status.as_u16() {
            200..=299 => "allowed",
            401 | 403 => "refused",
            _ => "failed",
        };
        let record = AuditRecord {
            id,
            time,
            user: who.map(|w| w.user.clone()),
            role: who.filter(|w| w.registration.is_none()).map(|w| w.role),
            source: req.peer.map(|p| p.to_string()),
            method: req.method.to_string(),
            route: req.path.clone(),
            target: target.or_else(|| authz::target(&req.path)),
            status: status.as_u16(),
            outcome: outcome.into(),
            request_id: req.request_id.clone(),
        };
        // Changes made without credentials (through an open path) are kept like everyone's;
        // refusals of unknown callers only within a budget, so a flood cannot fill the store.
        let store_it = who.is_some() || outcome == "allowed" || self.anonymous_budget();
        let line = serde_json::to_string(&record).unwrap_or_default();
        tracing::info!(target: "commissaire::audit", audit = %line, stored = store_it, "audit");
        if let Some(store) = self.store.as_ref().filter(|_| store_it)
            && let Err(e) = domain::audit::append(store.as_ref(), &record).await
        {
            tracing::warn!(error = %e, "cannot store an audit record (it is in this log)");
        }
    }
}

/// What the audit log needs of a request, taken before the request moves on.
struct RequestFacts {
    method: Method,
    path: String,
    peer: Option<std::net::IpAddr>,
    request_id: Option<String>,
}

impl RequestFacts {
    fn of(req: &Request) -> Self {
        RequestFacts {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            peer: req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

/// What the audit log records of an answer: its status, and the target a handler named when
/// the path does not.
fn answer(resp: &Response) -> (StatusCode, Option<String>) {
    let target = resp.extensions().get::<AuditTarget>().map(|t| t.0.clone());
    (resp.status(), target)
}

/// Reads change nothing: they are not recorded when allowed.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn refusal(status: StatusCode, msg: String, basic: bool) -> Response {
    let mut resp = ApiError::new(status, msg).into_response();
    if status == StatusCode::UNAUTHORIZED && basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"commissaire\""),
        );
    }
    resp
}

/// Axum middleware: authenticates, authorizes (403 naming the missing permission), and
/// records every change and every refused attempt in the audit log.
pub async fn layer(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    if auth.is_public(req.uri().path()) {
        // Open paths answer anyone. A caller who presents valid credentials is still known
        // there, so a handler can show such callers more (`/api/v0/status` shows the workers'
        // last jobs and errors only to them); bad credentials are not refused here.
        if auth.plugins.is_empty() {
            req.extensions_mut()
                .insert(Identity::user("anonymous", Role::Admin));
        } else {
            let cert = req.extensions().get::<PeerCertificate>().cloned();
            let presented = cert.is_some()
                || req
                    .headers()
                    .contains_key(axum::http::header::AUTHORIZATION)
                || req.headers().contains_key("x-auth-token");
            if presented {
                let peer = req
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip());
                if let Outcome::Allowed(who) =
                    auth.authenticate(req.headers(), cert.as_ref(), peer).await
                    && who.registration.is_none()
                {
                    req.extensions_mut().insert(who);
                }
            }
        }
        // A change through an open path (e.g. hosts registering themselves through a
        // self-auth `/api/v0/host`) is recorded like any other; by nobody when no credentials
        // came with it. Reads (the scraped `/metrics` and `/status`) take nothing here.
        let change = (!is_read(req.method())).then(|| {
            (
                RequestFacts::of(&req),
                req.extensions().get::<Identity>().cloned(),
            )
        });
        let resp = next.run(req).await;
        if let Some((facts, who)) = change {
            let (status, target) = answer(&resp);
            auth.audit(who.as_ref(), &facts, status, target).await;
        }
        return resp;
    }
    let facts = RequestFacts::of(&req);
    let read = is_read(&facts.method);
    let basic = auth.plugins.iter().any(Plugin::uses_basic);
    let who = if auth.plugins.is_empty() {
        // insecure-no-auth: everyone is an anonymous admin (and still audited).
        Identity::user("anonymous", Role::Admin)
    } else {
        let cert = req.extensions().get::<PeerCertificate>().cloned();
        match auth
            .authenticate(req.headers(), cert.as_ref(), facts.peer)
            .await
        {
            Outcome::Allowed(who) => who,
            Outcome::Unavailable(m) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m).into_response();
            }
            other => {
                let msg = if matches!(other, Outcome::Rejected) {
                    "invalid credentials"
                } else {
                    "authentication required: send HTTP basic credentials (or a bearer token, when a token plugin is configured)"
                };
                auth.audit(None, &facts, StatusCode::UNAUTHORIZED, None)
                    .await;
                return refusal(StatusCode::UNAUTHORIZED, msg.into(), basic);
            }
        }
    };
    let refused = if who.registration.is_some() {
        (!authz::registration_allowed(&facts.method, &facts.path)).then(|| {
            format!(
                "{} may only register a host (PUT /api/v0/host), not {} {}",
                who.user, facts.method, facts.path
            )
        })
    } else {
        let need = authz::required(&facts.method, &facts.path);
        (who.role < need.role).then(|| {
            format!(
                "user {} (role {}) lacks permission {} for {} {} (needs role {})",
                who.user, who.role, need.name, facts.method, facts.path, need.role
            )
        })
    };
    if let Some(msg) = refused {
        auth.audit(Some(&who), &facts, StatusCode::FORBIDDEN, None)
            .await;
        return refusal(StatusCode::FORBIDDEN, msg, basic);
    }
    req.extensions_mut().insert(who.clone());
    let resp = next.run(req).await;
    let (status, target) = answer(&resp);
    if !read || status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        auth.audit(Some(&who), &facts, status, target).await;
    }
    resp
}

/// Creates `users.json` with user `admin` and a random password in `dir` if it does not exist.
/// Returns the file's path and, when it was just created, the password (to print once).
pub fn ensure_admin_users_file(dir: &Path) -> Result<(PathBuf, Option<String>), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("users.json");
    if path.exists() {
        return Ok((path, None));
    }
    // Letters and digits only, so the password pastes cleanly into shells and URLs.
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let hash = bcrypt::hash(&password, 12).map_err(|e| format!("bcrypt: {e}"))?;
    let body = serde_json::json!({"admin": {"hash": hash}});
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(
        serde_json::to_string_pretty(&body)
            .unwrap_or_default()
            .as_bytes(),
    )
    .and_then(|_| f.sync_all())
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path, Some(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn basic_auth_file_reload_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let hash = bcrypt::hash("pw:with:colons", 4).unwrap();
        std::fs::write(&path, serde_json::json!({"a": {"hash": hash}}).to_string()).unwrap();
        let mut opts = Map::new();
        opts.insert("filepath".into(), Value::String(path.display().to_string()));
        let b = BasicAuth::from_options(&opts).unwrap();
        assert!(matches!(
            b.check(&headers("a", "pw:with:colons"), None).await,
            Outcome::Allowed(_)
        ));
        assert!(matches!(
            b.check(&headers("a", "nope"), None).await,
            Outcome::Rejected
        ));
        assert!(matches!(
            b.check(&headers("zz", "x"), None).await,
            Outcome::Rejected
        ));
        assert!(matches!(
            b.check(&HeaderMap::new(), None).await,
            Outcome::NotMine
        ));
        // A cached success is dropped when the file changes.
        let other = bcrypt::hash("new", 4).unwrap();
        std::fs::write(
            &path,
            serde_json::json!({"a": {"hash": other}, "padding": {"hash": other}}).to_string(),
        )
        .unwrap();
        assert!(matches!(
            b.check(&headers("a", "pw:with:colons"), None).await,
            Outcome::Rejected
        ));
        assert!(matches!(
            b.check(&headers("a", "new"), None).await,
            Outcome::Allowed(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_new_credentials_costs_one_bcrypt() {
        let mut opts = Map::new();
        opts.insert(
            "users".into(),
            serde_json::json!({"a": {"hash": bcrypt::hash("pw", 6).unwrap()}}),
        );
        let b = Arc::new(BasicAuth::from_options(&opts).unwrap());
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.check(&headers("a", "pw"), None).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Outcome::Allowed(_)));
        }
        // Two slots: at most the first two ran bcrypt; everyone after found the result.
        let runs = b.bcrypt_runs.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=BCRYPT_SLOTS as u64).contains(&runs),
            "{runs} bcrypt runs"
        );
    }

    #[test]
    fn throttle_delays_grow_and_memory_is_bounded() {
        assert_eq!(delay_for(0), Duration::ZERO);
        assert_eq!(delay_for(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(delay_for(FREE_FAILURES), BASE_DELAY);
        assert_eq!(delay_for(FREE_FAILURES + 2), BASE_DELAY * 4);
        assert_eq!(delay_for(u32::MAX), MAX_DELAY);
        let t = Throttle::default();
        let k = [ThrottleKey::Addr("10.0.0.1".parse().unwrap())];
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.begin(&k), Duration::ZERO);
            t.finish(&k, false);
        }
        assert_eq!(t.begin(&k), BASE_DELAY);
        // A check under way counts: a concurrent guess waits longer.
        assert_eq!(t.begin(&k), BASE_DELAY * 2);
        t.finish(&k, false);
        t.finish(&k, true);
        assert_eq!(t.begin(&k), Duration::ZERO, "a success clears the key");
        t.finish(&k, true);
        for i in 0..(THROTTLE_MAX as u32 + 500) {
            let k = [ThrottleKey::Addr(std::net::IpAddr::from(i.to_be_bytes()))];
            t.begin(&k);
            t.finish(&k, false);
        }
        assert!(t.len() <= THROTTLE_MAX, "{}", t.len());
        assert_eq!(bcrypt_cost("$2b$12$abc"), Some(12));
        assert_eq!(bcrypt_cost("nope"), None);
    }

    #[tokio::test]
    async fn unknown_users_are_checked_at_the_users_cost() {
        let b = BasicAuth::from_options(
            serde_json::json!({"users": {"a": {"hash": bcrypt::hash("pw", 6).unwrap()}}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            b.check(&headers("zz", "x"), None).await,
            Outcome::Rejected
        ));
        let dummies = b.dummy_hashes.lock().unwrap().clone();
        assert_eq!(dummies.len(), 1);
        assert_eq!(bcrypt_cost(&dummies[&6]), Some(6));
    }

    #[test]
    fn roles_in_files_and_plugin_options() {
        let hash = "$2b$04$abcdefghijklmnopqrstuuN5Ig3rB1Cq6tHl3d6w1xvS1Zr4mh9oUO";
        let users = parse_users(
            &serde_json::json!({"old": {"hash": hash}, "v": {"hash": hash, "role": "viewer"}}),
            "test",
        )
        .unwrap();
        assert_eq!(
            users["old"].1,
            Role::Admin,
            "no role: admin, as before roles"
        );
        assert_eq!(users["v"].1, Role::Viewer);
        let e = parse_users(
            &serde_json::json!({"v": {"hash": hash, "role": "root"}}),
            "users file x",
        )
        .unwrap_err();
        assert!(
            e.contains("users file x") && e.contains("\"root\" is not a role"),
            "{e}"
        );

        let mut opts = serde_json::json!({"roles": "{\"ops\": \"operator\", \"admins\": \"admin\"}", "default_role": "viewer", "cn": "x"})
            .as_object()
            .unwrap()
            .clone();
        let map = RoleMap::take("p", &mut opts).unwrap();
        assert_eq!(opts.len(), 1, "roles and default_role are taken out");
        assert_eq!(map.role_of(["nobody"]), Role::Viewer);
        assert_eq!(map.role_of(["ops", "nobody"]), Role::Operator);
        assert_eq!(
            map.role_of(["ops", "admins"]),
            Role::Admin,
            "the highest wins"
        );
        assert_eq!(RoleMap::default().role_of([]), Role::Admin);
        let mut bad = serde_json::json!({"roles": {"x": "boss"}})
            .as_object()
            .unwrap()
            .clone();
        assert!(
            RoleMap::take("p", &mut bad)
                .unwrap_err()
                .contains("roles.x")
        );
        assert_eq!(
            short_name("commissaire.authentication.httpbasicauth"),
            "httpbasicauth"
        );
        assert_eq!(
            short_name("commissaire_http.authentication.keystonetokenauth"),
            "keystonetokenauth"
        );
    }

    #[test]
    fn original_hashes_accepted() {
        // The original's shipped users.json: user a, password a, $2a$ prefix.
        assert!(
            bcrypt::verify(
                "a",
                "$2a$12$SQPstqN3Ci95hYZ4u/syluTx8M5wSVwfhcC.iiawjoVck7Qyh43Ni"
            )
            .unwrap()
        );
    }
}
