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

/// Wraps the TLS acceptor: after the handshake, the connection's verified client certificate
/// (if the client sent one) goes into every request's extensions as a [`PeerCertificate`].
#[derive(Clone, Debug)]
pub struct PeerCertAcceptor<A> {
    inner: A,
}

impl<A> PeerCertAcceptor<A> {
    /// Wraps `inner` (an `axum_server` TLS acceptor).
    pub fn new(inner: A) -> Self {
        PeerCertAcceptor { inner }
    }
}

impl<A, I, S, T> axum_server::accept::Accept<I, S> for PeerCertAcceptor<A>
where
    A: axum_server::accept::Accept<I, S, Stream = tokio_rustls::server::TlsStream<T>>,
    A::Future: Send + 'static,
    A::Service: Send + 'static,
    T: Send + 'static,
{
    type Stream = A::Stream;
    type Service = WithPeerCert<A::Service>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let fut = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = fut.await?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCertificate(std::sync::Arc::new(c.as_ref().to_vec())));
            Ok((
                stream,
                WithPeerCert {
                    inner: service,
                    cert,
                },
            ))
        })
    }
}

/// A connection's service that adds its client certificate to each request.
#[derive(Clone, Debug)]
pub struct WithPeerCert<S> {
    inner: S,
    cert: Option<PeerCertificate>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithPeerCert<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        if let Some(c) = &self.cert {
            req.extensions_mut().insert(c.clone());
        }
        self.inner.call(req)
    }
}
