//! The etcd v3 backend: keys live under a prefix (default `/commissaire/`) in an etcd cluster,
//! so several Commissaire servers can share one store.
//!
//! The gRPC client is generated at build time from our own subset of etcd's protocol buffers
//! (`proto/etcd.proto`, `proto/kv.proto`) with a vendored `protoc`, so no system `protoc` is
//! needed. Every unary call is bounded by [`EtcdConfig::request_timeout`]; a down etcd yields
//! [`StoreError::Unavailable`] quickly and the channel reconnects by itself on the next call.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

use crate::{
    Compare, Event, EventKind, EventStream, KeyValue, LeaseId, Op, Revision, Store, StoreError,
    StoreResult, TxnOutcome,
};

/// Code generated from `proto/*.proto` by `build.rs`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unreachable_pub,
    rustdoc::all
)]
mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::{
    self as rpc, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use pb::mvccpb;

/// Largest response we accept (tonic's default of 4 MiB is too small for a big `list`).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Upper bound on establishing a TCP (and TLS) connection to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often HTTP/2 pings check a connection that carries open watches. etcd rejects pings
/// more often than every 5 s, and pings on idle connections, so only active ones are pinged.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered before the connection (and its watches) is declared dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd and where Commissaire's keys live in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster members, e.g. `["http://127.0.0.1:2379"]`; `https://` when
    /// TLS is used. Requests go to the first member that answers.
    pub endpoints: Vec<String>,
    /// Prefix of every key (default `/commissaire/`); a stored key is this prefix followed by
    /// the relative key. A `/` is appended when missing.
    pub prefix: String,
    /// PEM file of the CA that signed the etcd server certificates (`certificate_ca_path`);
    /// required for `https://` endpoints.
    pub ca_path: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`certificate_path`); needs `key_path`.
    pub cert_path: Option<PathBuf>,
    /// PEM private key of the client certificate (`certificate_key_path`).
    pub key_path: Option<PathBuf>,
    /// Bound on every unary request (connect included), default 1500 ms.
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "/commissaire/".to_string(),
            ca_path: None,
            cert_path: None,
            key_path: None,
            request_timeout: Duration::from_millis(1500),
        }
    }
}

/// A [`Store`] backed by an etcd v3 cluster. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// One lazily connected channel per endpoint, in configuration order.
    members: Vec<Member>,
    /// Index of the member that answered last; requests start there.
    preferred: AtomicUsize,
    /// Normalized key prefix (ends with `/` unless empty).
    prefix: String,
    /// Bound on every unary request.
    timeout: Duration,
}

struct Member {
    /// The configured URL, for log messages.
    url: String,
    channel: Channel,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field(
                "endpoints",
                &self
                    .inner
                    .members
                    .iter()
                    .map(|m| &m.url)
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl EtcdStore {
    /// Prepares connections to the configured endpoints.
    ///
    /// Does not contact etcd: a cluster that is down right now makes the operations fail with
    /// [`StoreError::Unavailable`] until it is back, not this call. Fails only on bad
    /// configuration (no endpoint, malformed URL, unreadable or invalid certificate files), with
    /// a message naming the problem.
    pub async fn connect(cfg: EtcdConfig) -> StoreResult<EtcdStore> {
        if cfg.endpoints.is_empty() {
            return Err(config_error("no etcd endpoint configured".to_string()));
        }
        if cfg.request_timeout.is_zero() {
            return Err(config_error(
                "etcd request timeout must be positive".to_string(),
            ));
        }
        let tls = tls_config(&cfg).await?;
        let mut members = Vec::with_capacity(cfg.endpoints.len());
        for url in &cfg.endpoints {
            let channel = endpoint(url, tls.as_ref(), &cfg)?.connect_lazy();
            members.push(Member {
                url: url.clone(),
                channel,
            });
        }
        let mut prefix = cfg.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                members,
                preferred: AtomicUsize::new(0),
                prefix,
                timeout: cfg.request_timeout,
            }),
        })
    }

    /// The key prefix in use (normalized to end with `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.inner.prefix.len() + key.len());
        full.extend_from_slice(self.inner.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Runs `call` against the preferred member, bounded by the request timeout.
    ///
    /// With several members, a failure to even connect moves on to the next member (the
    /// request was never sent, so this is safe for writes); other unavailability errors move
    /// on only for `idempotent` requests, because a write whose answer was lost may have been
    /// applied and must not be applied twice.
    async fn call<T, F, Fut>(&self, what: &'static str, idempotent: bool, call: F) -> StoreResult<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let members = &self.inner.members;
        let start = self.inner.preferred.load(Ordering::Relaxed) % members.len();
        let attempts = async {
            let mut last = None;
            for i in 0..members.len() {
                let idx = (start + i) % members.len();
                match call(members[idx].channel.clone()).await {
                    Ok(v) => {
                        if i > 0 {
                            self.inner.preferred.store(idx, Ordering::Relaxed);
                        }
                        return Ok(v);
                    }
                    Err(status) => {
                        let unavailable = is_unavailable(&status);
                        let safe = is_connect_error(&status) || (idempotent && unavailable);
                        if !(unavailable && safe) {
                            return Err(map_status(what, &status));
                        }
                        tracing::debug!(
                            endpoint = %members[idx].url,
                            "etcd {what} failed: {}",
                            describe(&status)
                        );
                        last = Some(status);
                    }
                }
            }
            Err(last.map_or_else(
                || StoreError::Unavailable(format!("etcd {what}: no endpoint")),
                |s| map_status(what, &s),
            ))
        };
        match tokio::time::timeout(self.inner.timeout, attempts).await {
            Ok(result) => result,
            Err(_) => {
                // The member we waited on may be unreachable (black-holed): start the next
                // request at another one.
                if members.len() > 1 {
                    let _ = self.inner.preferred.compare_exchange(
                        start,
                        (start + 1) % members.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(StoreError::Unavailable(format!(
                    "etcd did not answer {what} within {} ms",
                    self.inner.timeout.as_millis()
                )))
            }
        }
    }

    async fn range(
        &self,
        what: &'static str,
        req: rpc::RangeRequest,
    ) -> StoreResult<rpc::RangeResponse> {
        self.call(what, true, |ch| {
            let req = req.clone();
            async move {
                let mut client = KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES);
                Ok(client.range(req).await?.into_inner())
            }
        })
        .await
    }

    /// A range request for every key under `prefix`, sorted by key (without the values when
    /// `keys_only`).
    fn list_request(&self, prefix: &str, keys_only: bool) -> rpc::RangeRequest {
        let (key, range_end) = prefix_range(self.full_key(prefix));
        rpc::RangeRequest {
            key,
            range_end,
            sort_order: rpc::range_request::SortOrder::Ascend as i32,
            sort_target: rpc::range_request::SortTarget::Key as i32,
            keys_only,
            ..Default::default()
        }
    }

    /// Converts a stored key-value pair; `None` for keys outside the prefix or not UTF-8
    /// (foreign data Commissaire never writes, skipped rather than failing whole lists).
    fn convert_kv(&self, kv: mvccpb::KeyValue) -> Option<KeyValue> {
        let key = self.relative_key(&kv.key)?;
        Some(KeyValue {
            key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }

    fn relative_key(&self, full: &[u8]) -> Option<String> {
        let rel = full.strip_prefix(self.inner.prefix.as_bytes())?;
        match String::from_utf8(rel.to_vec()) {
            Ok(key) => Some(key),
            Err(_) => {
                tracing::warn!(
                    "ignoring etcd key under {} that is not UTF-8",
                    self.inner.prefix
                );
                None
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let req = rpc::RangeRequest {
            key: self.full_key(key),
            ..Default::default()
        };
        let resp = self.range("get", req).await?;
        Ok(resp.kvs.into_iter().find_map(|kv| self.convert_kv(kv)))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let resp = self.range("list", self.list_request(prefix, false)).await?;
        Ok(resp
            .kvs
            .into_iter()
            .filter_map(|kv| self.convert_kv(kv))
            .collect())
    }

    async fn list_keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let resp = self
            .range("list_keys", self.list_request(prefix, true))
            .await?;
        Ok(resp
            .kvs
            .into_iter()
            .filter_map(|kv| self.relative_key(&kv.key))
            .collect())
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnOutcome> {
        let mut compare = Vec::with_capacity(compares.len());
        for c in compares {
            compare.extend(self.compare(c));
        }
        let success = last_op_per_key(ops)
            .into_iter()
            .map(|op| self.request_op(op))
            .collect();
        let req = rpc::TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        };
        let resp = self
            .call("txn", false, |ch| {
                let req = req.clone();
                async move { Ok(KvClient::new(ch).txn(req).await?.into_inner()) }
            })
            .await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded,
            revision: header_revision(resp.header.as_ref())?,
        })
    }

    async fn revision(&self) -> StoreResult<Revision> {
        // Counting one key is the cheapest linearizable read; its header carries the revision.
        let req = rpc::RangeRequest {
            key: prefix_range(self.full_key("")).0,
            limit: 1,
            count_only: true,
            ..Default::default()
        };
        let resp = self.range("revision", req).await?;
        header_revision(resp.header.as_ref())
    }

    async fn watch(&self, prefix: &str, from: Option<Revision>) -> StoreResult<EventStream> {
        let (key, range_end) = prefix_range(self.full_key(prefix));
        let create = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                rpc::WatchCreateRequest {
                    key,
                    range_end,
                    // etcd reads 0 as "from now"; any explicit revision below 1 means "all
                    // history".
                    start_revision: from.map_or(0, |r| r.max(1)),
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        // Waiting for the `created` answer means that with `from = None` every change after
        // this call returns is delivered, and that a down etcd is reported here.
        let (inbound, created) = self
            .call("watch", true, |ch| {
                let create = create.clone();
                async move {
                    // The request side must stay open: etcd keeps serving a watch whose client
                    // half-closed, but tonic ends the call when the request stream ends.
                    let outbound =
                        futures::stream::iter([create]).chain(futures::stream::pending());
                    let mut inbound = WatchClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .watch(outbound)
                        .await?
                        .into_inner();
                    loop {
                        match inbound.message().await? {
                            Some(resp) if resp.created => return Ok((inbound, resp)),
                            // Nothing else can come before `created` on a fresh stream.
                            Some(_) => continue,
                            None => {
                                return Err(Status::unavailable(
                                    "watch stream closed before the watch was created",
                                ));
                            }
                        }
                    }
                }
            })
            .await?;
        let next = match from {
            Some(r) => r.max(1),
            None => header_revision(created.header.as_ref())? + 1,
        };
        let mut state = WatchState {
            store: self.clone(),
            inbound,
            next,
            pending: std::collections::VecDeque::new(),
            done: false,
        };
        // The creation answer can already report compaction or cancellation.
        state.absorb(created);
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut state| async move {
                let item = state.next_item().await?;
                Some((item, state))
            },
        )))
    }

    async fn health(&self) -> StoreResult<()> {
        let status = self
            .call("status", true, |ch| async move {
                Ok(MaintenanceClient::new(ch)
                    .status(rpc::StatusRequest {})
                    .await?
                    .into_inner())
            })
            .await?;
        if status.leader == 0 {
            return Err(StoreError::Unavailable(
                "etcd member has no leader".to_string(),
            ));
        }
        if !status.errors.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd reports: {}",
                status.errors.join("; ")
            )));
        }
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "etcd"
    }

    async fn lease_grant(&self, ttl_seconds: i64) -> StoreResult<LeaseId> {
        let req = rpc::LeaseGrantRequest {
            ttl: ttl_seconds,
            id: 0,
        };
        let resp = self
            .call("lease grant", false, |ch| async move {
                Ok(LeaseClient::new(ch).lease_grant(req).await?.into_inner())
            })
            .await?;
        if !resp.error.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                resp.error
            )));
        }
        Ok(resp.id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> StoreResult<bool> {
        // One renewal per call on a short-lived stream: renewals are seconds apart, and a
        // stream held open would need its own reconnection logic.
        let resp = self
            .call("lease keep-alive", true, |ch| async move {
                let req = rpc::LeaseKeepAliveRequest { id: lease };
                let mut inbound = LeaseClient::new(ch)
                    .lease_keep_alive(tokio_stream::once(req))
                    .await?
                    .into_inner();
                inbound
                    .message()
                    .await?
                    .ok_or_else(|| Status::unavailable("keep-alive stream ended without an answer"))
            })
            .await?;
        Ok(resp.ttl > 0)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> StoreResult<()> {
        let req = rpc::LeaseRevokeRequest { id: lease };
        self.call("lease revoke", false, |ch| async move {
            Ok(LeaseClient::new(ch).lease_revoke(req).await?.into_inner())
        })
        .await?;
        Ok(())
    }
}

impl EtcdStore {
    fn compare(&self, c: Compare) -> Vec<rpc::Compare> {
        use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
        match c {
            // A key that does not exist has create revision 0.
            Compare::Absent(key) => vec![rpc::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: self.full_key(&key),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: Vec::new(),
            }],
            Compare::ModRevision(key, rev) => {
                let key = self.full_key(&key);
                let mut out = vec![rpc::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(rev)),
                    range_end: Vec::new(),
                }];
                // etcd compares a missing key's mod revision as 0; the trait says the key must
                // exist, so `ModRevision(k, 0)` must not hold for a missing key.
                if rev <= 0 {
                    out.push(rpc::Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Create as i32,
                        key,
                        target_union: Some(TargetUnion::CreateRevision(0)),
                        range_end: Vec::new(),
                    });
                }
                out
            }
        }
    }

    fn request_op(&self, op: Op) -> rpc::RequestOp {
        use rpc::request_op::Request;
        let request = match op {
            Op::Put { key, value } => Request::RequestPut(rpc::PutRequest {
                key: self.full_key(&key),
                value,
                ..Default::default()
            }),
            Op::PutLeased { key, value, lease } => Request::RequestPut(rpc::PutRequest {
                key: self.full_key(&key),
                value,
                lease,
                ..Default::default()
            }),
            Op::Delete { key } => Request::RequestDeleteRange(rpc::DeleteRangeRequest {
                key: self.full_key(&key),
                ..Default::default()
            }),
        };
        rpc::RequestOp {
            request: Some(request),
        }
    }
}

/// etcd refuses a transaction that writes one key twice ("duplicate key given in txn
/// request"); only the last write to a key decides its final state, so keep just that one.
fn last_op_per_key(ops: Vec<Op>) -> Vec<Op> {
    fn key(op: &Op) -> &str {
        match op {
            Op::Put { key, .. } | Op::PutLeased { key, .. } | Op::Delete { key } => key,
        }
    }
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        last.insert(key(op).to_string(), i);
    }
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| last.get(key(op)) == Some(i))
        .map(|(_, op)| op)
        .collect()
}

/// Consumer side of one etcd watch.
struct WatchState {
    store: EtcdStore,
    inbound: Streaming<rpc::WatchResponse>,
    /// The lowest revision not yet delivered.
    next: Revision,
    /// Converted items waiting to be yielded (batches, or a final error).
    pending: std::collections::VecDeque<StoreResult<Vec<Event>>>,
    /// Set once the watch is over: after the pending items, the stream ends.
    done: bool,
}

impl WatchState {
    async fn next_item(&mut self) -> Option<StoreResult<Vec<Event>>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.inbound.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => self.fail(StoreError::Unavailable(
                    "etcd closed the watch stream".to_string(),
                )),
                Err(status) => self.fail(map_status("watch", &status)),
            }
        }
    }

    fn fail(&mut self, err: StoreError) {
        self.pending.push_back(Err(err));
        self.done = true;
    }

    /// Turns one watch response into items: one batch per revision. etcd never splits a
    /// revision across responses (we do not ask for fragments), so a response's last batch is
    /// complete and is delivered right away.
    fn absorb(&mut self, resp: rpc::WatchResponse) {
        if self.done {
            return;
        }
        if resp.compact_revision > 0 {
            self.fail(StoreError::Compacted {
                requested: self.next,
                oldest: resp.compact_revision,
            });
            return;
        }
        if resp.canceled {
            let reason = if resp.cancel_reason.is_empty() {
                "no reason given".to_string()
            } else {
                resp.cancel_reason
            };
            self.fail(StoreError::Backend(format!(
                "etcd canceled the watch: {reason}"
            )));
            return;
        }
        let mut batch: Vec<Event> = Vec::new();
        for ev in resp.events {
            let Some(event) = self.convert_event(ev) else {
                continue;
            };
            // Defensive: never deliver a revision twice or out of order.
            if event.revision < self.next {
                continue;
            }
            if batch.first().is_some_and(|b| b.revision != event.revision) {
                self.flush(&mut batch);
            }
            batch.push(event);
        }
        self.flush(&mut batch);
    }

    fn flush(&mut self, batch: &mut Vec<Event>) {
        if let Some(first) = batch.first() {
            self.next = first.revision + 1;
            self.pending.push_back(Ok(std::mem::take(batch)));
        }
    }

    fn convert_event(&self, ev: mvccpb::Event) -> Option<Event> {
        let kv = ev.kv?;
        let key = self.store.relative_key(&kv.key)?;
        let delete = ev.r#type == mvccpb::event::EventType::Delete as i32;
        Some(if delete {
            Event {
                revision: kv.mod_revision,
                key,
                kind: EventKind::Delete,
                created: false,
                value: ev.prev_kv.map(|p| p.value),
            }
        } else {
            Event {
                revision: kv.mod_revision,
                key,
                kind: EventKind::Put,
                created: kv.create_revision == kv.mod_revision,
                value: Some(kv.value),
            }
        })
    }
}

/// The `(key, range_end)` pair selecting every key that starts with `prefix`. etcd rejects an
/// empty key, so the empty prefix becomes `["\0", "\0")`: every key.
fn prefix_range(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let end = prefix_end(&prefix);
    (prefix, end)
}

/// The end of the range holding every key that starts with `prefix`: the prefix with its last
/// byte below 0xff incremented (trailing 0xff bytes dropped); `\0` (no upper bound) when there
/// is no such byte.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(header: Option<&rpc::ResponseHeader>) -> StoreResult<Revision> {
    header
        .map(|h| h.revision)
        .ok_or_else(|| StoreError::Backend("etcd response without header".to_string()))
}

fn config_error(msg: String) -> StoreError {
    StoreError::Backend(format!("invalid etcd configuration: {msg}"))
}

/// The system's CA bundle: `SSL_CERT_FILE` when set, else the first of the Debian and Red Hat
/// bundle files that exists.
fn system_ca_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Builds the TLS settings shared by all `https://` endpoints, or `None` for plain HTTP.
async fn tls_config(cfg: &EtcdConfig) -> StoreResult<Option<ClientTlsConfig>> {
    let https = cfg
        .endpoints
        .iter()
        .filter(|u| u.starts_with("https://"))
        .count();
    let any_cert = cfg.ca_path.is_some() || cfg.cert_path.is_some() || cfg.key_path.is_some();
    if https == 0 {
        if any_cert {
            return Err(config_error(
                "certificates are configured but the etcd endpoints use http://; use https://"
                    .to_string(),
            ));
        }
        return Ok(None);
    }
    if https != cfg.endpoints.len() {
        return Err(config_error(
            "etcd endpoints mix http:// and https://".to_string(),
        ));
    }
    // No system roots are compiled in (one small TLS stack). Without certificate_ca_path the
    // system's CA bundle file is used, as the original's etcd client did: `SSL_CERT_FILE`,
    // else the distribution's bundle.
    let ca_path = match &cfg.ca_path {
        Some(p) => p.clone(),
        None => system_ca_bundle().ok_or_else(|| {
            config_error(
                "https:// etcd endpoints need a CA certificate: set certificate_ca_path (no system CA bundle found either: SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt)"
                    .to_string(),
            )
        })?,
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
        read_file("CA certificate", &ca_path).await?,
    ));
    match (&cfg.cert_path, &cfg.key_path) {
        (Some(cert), Some(key)) => {
            let cert = read_file("client certificate", cert).await?;
            let key = read_file("client key", key).await?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(config_error(
                "a client certificate (certificate_path) needs its key (certificate_key_path)"
                    .to_string(),
            ));
        }
        (None, Some(_)) => {
            return Err(config_error(
                "a client key (certificate_key_path) needs its certificate (certificate_path)"
                    .to_string(),
            ));
        }
    }
    Ok(Some(tls))
}

async fn read_file(what: &str, path: &Path) -> StoreResult<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .map_err(|e| config_error(format!("cannot read {what} {}: {e}", path.display())))
}

fn endpoint(url: &str, tls: Option<&ClientTlsConfig>, cfg: &EtcdConfig) -> StoreResult<Endpoint> {
    // Checked first so that a password in the URL never reaches a message.
    if url.contains('@') {
        return Err(config_error(
            "etcd endpoint URLs must not contain user credentials".to_string(),
        ));
    }
    let bad = |why: &str| config_error(format!("bad etcd endpoint URL {url:?}: {why}"));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("must start with http:// or https://"));
    }
    let mut ep = Endpoint::from_shared(url.to_string()).map_err(|e| bad(&e.to_string()))?;
    if ep.uri().host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    ep = ep
        .connect_timeout(CONNECT_TIMEOUT.min(cfg.request_timeout))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false);
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|e| config_error(format!("TLS settings for {url}: {}", error_chain(&e))))?;
    }
    Ok(ep)
}

/// Whether the failure means "etcd cannot be reached / did not answer" rather than "etcd
/// refused the request".
fn is_unavailable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        // A status carrying a source was made locally from a transport failure (connection
        // reset, HTTP/2 error, missed keep-alive), not sent by etcd.
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// Whether the request failed while connecting, i.e. was certainly never sent.
fn is_connect_error(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn map_status(what: &str, status: &Status) -> StoreError {
    if is_unavailable(status) {
        StoreError::Unavailable(format!("etcd {what}: {}", describe(status)))
    } else {
        StoreError::Backend(format!("etcd {what}: {}", describe(status)))
    }
}

/// The status message and its causes. etcd's messages name the failed check, never values.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/commissaire/hosts/"), b"/commissaire/hosts0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn duplicate_writes_keep_the_last() {
        let put = |k: &str, v: &str| Op::Put {
            key: k.to_string(),
            value: v.as_bytes().to_vec(),
        };
        let ops = vec![
            put("a", "1"),
            put("b", "1"),
            Op::Delete {
                key: "a".to_string(),
            },
        ];
        assert_eq!(
            last_op_per_key(ops),
            vec![
                put("b", "1"),
                Op::Delete {
                    key: "a".to_string()
                }
            ]
        );
    }

    #[tokio::test]
    async fn bad_configuration_is_reported() {
        let cfg = |endpoints: &[&str]| EtcdConfig {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            ..EtcdConfig::default()
        };
        for bad in [
            &[][..],
            &["127.0.0.1:2379"],
            &["http://"],
            &["http://exa mple"],
            &["http://user:secret@127.0.0.1:2379"],
        ] {
            let err = EtcdStore::connect(cfg(bad)).await.unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
            assert!(
                err.to_string().contains("invalid etcd configuration"),
                "{err}"
            );
        }
        let err = EtcdStore::connect(EtcdConfig {
            endpoints: vec!["https://127.0.0.1:2379".to_string()],
            ca_path: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let store = EtcdStore::connect(EtcdConfig {
            prefix: "/x".to_string(),
            ..EtcdConfig::default()
        })
        .await
        .unwrap();
        assert_eq!(store.prefix(), "/x/");
    }
}
