//! The HTTP client: endpoints tried in order on connection errors, authentication, TLS, and
//! the mapping of API errors to messages and exit codes.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;

use reqwest::blocking::{Client as Http, RequestBuilder};
use serde_json::Value;

use crate::config::{Auth, Settings};
use crate::error::{CliError, CliResult, EXIT_ERROR, EXIT_NOT_FOUND};

/// The message for a 401 answer.
pub const BAD_CREDENTIALS: &str = "The provided credentials were incorrect.";

/// HTTP methods commctl uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// POST
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Post => "POST",
        }
    }
}

/// Percent-encodes one URL path segment (unreserved characters and `:` stay as they are).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The message of an API error body `{"error": {"message": ...}}`, if that is what `body` is.
pub fn api_error_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let err = v.get("error")?;
    match err {
        Value::Object(o) => o.get("message")?.as_str().map(str::to_string),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Turns an error HTTP answer into the error commctl reports.
pub fn error_for_status(method: Method, path: &str, status: u16, body: &str) -> CliError {
    let api_message = api_error_message(body);
    let (code, message) = match status {
        401 => (EXIT_ERROR, BAD_CREDENTIALS.to_string()),
        403 => (
            EXIT_ERROR,
            api_message.unwrap_or_else(|| {
                "The server refused the request (403 Forbidden): the user may not do this, or the credentials were incorrect.".to_string()
            }),
        ),
        404 => (
            EXIT_NOT_FOUND,
            api_message.unwrap_or_else(|| format!("No object found at {path}.")),
        ),
        _ => (
            EXIT_ERROR,
            api_message.unwrap_or_else(|| {
                format!(
                    "Unable to {} the object at {path}: {status}",
                    method.as_str()
                )
            }),
        ),
    };
    CliError {
        code,
        message,
        http_status: Some(status),
    }
}

/// The innermost cause of an error, which is the informative part for connection errors
/// ("Connection refused (os error 111)").
/// TLS failures come with rustls' terse names (`UnknownIssuer`, `CaUsedAsEndEntity`); this
/// says what they mean and what to do about them.
fn tls_hint(reason: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 7] = [
        (
            "CaUsedAsEndEntity",
            "the server presents a CA certificate as its own; give the server a certificate signed by that CA (docs/tls.md shows the openssl commands) and pass the CA with --ca-path",
        ),
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA commctl trusts; pass the CA that signed it with --ca-path (or \"ca_path\" in the configuration file)",
        ),
        (
            "NotValidForName",
            "the server's certificate does not name the host in the endpoint URL; use a name or address from its subjectAltName, or reissue it with the right one (docs/tls.md)",
        ),
        (
            "Expired",
            "the server's certificate has expired (or this machine's clock is wrong); renew it",
        ),
        (
            "NotValidYet",
            "the server's certificate is not valid yet; check this machine's clock and the server's",
        ),
        (
            "CertificateRequired",
            "the server requires a client certificate; set client_cert and client_key (or --client-cert/--client-key)",
        ),
        (
            "InvalidContentType",
            "the server did not answer with TLS; is the endpoint http:// rather than https://?",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map(|(_, hint)| *hint)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let reason = cur.to_string();
    match tls_hint(&reason) {
        Some(hint) => format!("{reason}: {hint}"),
        None => reason,
    }
}

/// A connection to the Commissaire server.
pub struct Client {
    http: Http,
    endpoints: Vec<String>,
    current: Cell<usize>,
    auth: RefCell<Auth>,
    /// Whether credentials may be asked for on the terminal.
    interactive: bool,
    /// Whether a client certificate is configured.
    has_identity: bool,
}

impl Client {
    /// Builds the client from resolved settings.
    pub fn new(settings: &Settings) -> CliResult<Client> {
        let mut b = Http::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("commctl/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_path {
            let pem = std::fs::read(ca)
                .map_err(|e| CliError::general(format!("reading ca_path {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CliError::general(format!(
                    "ca_path {}: not a PEM certificate bundle: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(CliError::general(format!(
                    "ca_path {}: holds no PEM certificate",
                    ca.display()
                )));
            }
            b = b.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &settings.client_identity {
            let mut pem = std::fs::read(cert).map_err(|e| {
                CliError::general(format!("reading client_cert {}: {e}", cert.display()))
            })?;
            if key != cert {
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| {
                    CliError::general(format!("reading client_key {}: {e}", key.display()))
                })?);
            }
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                CliError::general(format!(
                    "client_cert {} / client_key {}: not a PEM certificate and private key: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| CliError::general(format!("setting up HTTP: {}", root_cause(&e))))?;
        Ok(Client {
            http,
            endpoints: settings.endpoints.clone(),
            current: Cell::new(0),
            auth: RefCell::new(settings.auth.clone()),
            interactive: std::io::stdin().is_terminal(),
            has_identity: settings.client_identity.is_some(),
        })
    }

    /// The endpoint that answered last (the first one before any request).
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current.get()]
    }

    fn ensure_password(&self) -> CliResult<()> {
        let mut auth = self.auth.borrow_mut();
        if let Auth::Basic {
            username,
            password: password @ None,
        } = &mut *auth
        {
            if !self.interactive {
                return Err(CliError::general(format!(
                    "no password for user {username}: add \"password\" to the configuration file, pipe it with --password-stdin, or run commctl on a terminal to be asked"
                )));
            }
            let pw = rpassword::prompt_password(format!("Password for {username}: "))
                .map_err(|e| CliError::general(format!("reading the password: {e}")))?;
            *password = Some(pw);
        }
        Ok(())
    }

    fn with_auth(&self, rb: RequestBuilder) -> RequestBuilder {
        match &*self.auth.borrow() {
            Auth::None => rb,
            Auth::Basic { username, password } => rb.basic_auth(username, password.clone()),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    /// Sends one request, trying the endpoints in order on connection errors, and returns the
    /// status and body of the first answer.
    fn send(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<(u16, String)> {
        let mut tried: Vec<(String, String)> = Vec::new();
        let start = self.current.get();
        let n = self.endpoints.len();
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.endpoints[idx];
            let url = format!("{ep}/api/v0{path}");
            let rb = match method {
                Method::Get => self.http.get(&url),
                Method::Put => self.http.put(&url),
                Method::Delete => self.http.delete(&url),
                Method::Post => self.http.post(&url),
            };
            let rb = self
                .with_auth(rb)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            let rb = match body {
                Some(b) => rb.body(b.to_string()),
                None => rb,
            };
            match rb.send() {
                Ok(resp) => {
                    self.current.set(idx);
                    let status = resp.status().as_u16();
                    let text = resp.text().map_err(|e| {
                        CliError::general(format!("reading the answer of {ep}: {}", root_cause(&e)))
                    })?;
                    return Ok((status, text));
                }
                Err(e) if e.is_connect() => {
                    let reason = root_cause(&e);
                    if i + 1 < n {
                        let next = &self.endpoints[(idx + 1) % n];
                        eprintln!("Could not connect to {ep}. Retrying with {next}.");
                    }
                    tried.push((ep.clone(), reason));
                }
                Err(e) if e.is_timeout() => {
                    return Err(CliError::general(format!(
                        "{ep} did not answer {} {path} in time ({})",
                        method.as_str(),
                        root_cause(&e)
                    )));
                }
                Err(e) => {
                    let hint = if ep.starts_with("https://") && !self.has_identity {
                        " (if the server requires a client certificate, set client_cert and client_key)"
                    } else {
                        ""
                    };
                    return Err(CliError::general(format!(
                        "{} {url}: {}{hint}",
                        method.as_str(),
                        root_cause(&e)
                    )));
                }
            }
        }
        let mut msg = String::from("No servers could be reached. Tried the following:");
        for (ep, reason) in tried {
            msg.push_str(&format!("\n- {ep} ({reason})"));
        }
        msg.push_str("\nExiting...");
        Err(CliError::general(msg))
    }

    /// Calls the API (`path` below `/api/v0`) and returns the JSON answer (`Null` for an empty
    /// body). Error answers become [`CliError`]s with the API's message.
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        self.ensure_password()?;
        let (mut status, mut text) = self.send(method, path, body)?;
        if status == 401 && self.interactive && *self.auth.borrow() == Auth::None {
            // The server wants credentials and none were configured: ask once.
            let user = prompt_line("Username: ")?;
            *self.auth.borrow_mut() = Auth::Basic {
                username: user,
                password: None,
            };
            self.ensure_password()?;
            (status, text) = self.send(method, path, body)?;
        }
        if !(200..300).contains(&status) {
            return Err(error_for_status(method, path, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            CliError::general(format!(
                "the server's answer to {} {path} is not JSON ({e})",
                method.as_str()
            ))
        })
    }

    /// Opens `GET /api/v0{path}` as a Server-Sent Events stream on the endpoint that answered
    /// last, to be read line by line as events arrive. The request timeout does not apply (a
    /// feed is open for as long as it is read); callers must not depend on it making progress.
    pub fn open_stream(&self, path: &str) -> CliResult<reqwest::blocking::Response> {
        self.ensure_password()?;
        let ep = self.endpoint().to_string();
        let url = format!("{ep}/api/v0{path}");
        let rb = self
            .with_auth(self.http.get(&url))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // A week: "no limit" in practice, while staying a finite bound.
            .timeout(std::time::Duration::from_secs(7 * 24 * 3600));
        let resp = rb
            .send()
            .map_err(|e| CliError::general(format!("GET {url}: {}", root_cause(&e))))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().unwrap_or_default();
            return Err(error_for_status(Method::Get, path, status, &text));
        }
        Ok(resp)
    }

    /// GET
    pub fn get(&self, path: &str) -> CliResult<Value> {
        self.call(Method::Get, path, None)
    }

    /// PUT with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.call(Method::Put, path, Some(body))
    }

    /// DELETE
    pub fn delete(&self, path: &str) -> CliResult<Value> {
        self.call(Method::Delete, path, None)
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.call(Method::Post, path, Some(body))
    }
}

fn prompt_line(prompt: &str) -> CliResult<String> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_say_what_to_do() {
        let r = "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        assert!(tls_hint(r).unwrap().contains("docs/tls.md"));
        assert!(
            tls_hint("invalid peer certificate: UnknownIssuer")
                .unwrap()
                .contains("--ca-path")
        );
        assert_eq!(tls_hint("Connection refused (os error 111)"), None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("prod-1_a"), "prod-1_a");
        assert_eq!(seg("fe80::1"), "fe80::1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("x?y#z"), "x%3Fy%23z");
    }

    #[test]
    fn api_errors_map_to_messages_and_codes() {
        let e = error_for_status(
            Method::Get,
            "/host/1.2.3.4",
            404,
            r#"{"error": {"status": 404, "message": "host 1.2.3.4 does not exist"}}"#,
        );
        assert_eq!(e.code, EXIT_NOT_FOUND);
        assert_eq!(e.message, "host 1.2.3.4 does not exist");
        let e = error_for_status(Method::Get, "/x", 401, "");
        assert_eq!((e.code, e.message.as_str()), (EXIT_ERROR, BAD_CREDENTIALS));
        let e = error_for_status(Method::Put, "/network/n", 500, "oops");
        assert_eq!(e.message, "Unable to PUT the object at /network/n: 500");
        assert_eq!(e.code, EXIT_ERROR);
        let e = error_for_status(Method::Get, "/nope", 404, "");
        assert_eq!(e.message, "No object found at /nope.");
        let e = error_for_status(
            Method::Put,
            "/cluster/c",
            409,
            r#"{"error": {"status": 409, "message": "conflict here"}}"#,
        );
        assert_eq!((e.code, e.message.as_str()), (EXIT_ERROR, "conflict here"));
        assert_eq!(e.http_status, Some(409));
    }
}
