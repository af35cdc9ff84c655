//! The HTTP side of the distribution API: endpoint and TLS choice, the auth challenge, the
//! bearer-token flow, capped bodies and errors classified for retries.
//!
//! Built on reqwest directly, not on oci-client: oci-client reads manifest and token bodies
//! whole with no size cap, turns a failed token request into an anonymous request (so a wrong
//! password surfaces as a confusing 401 later), and hides HTTP statuses needed to decide what
//! to retry. Credentials never follow a redirect to another host: reqwest drops
//! `Authorization` on any change of scheme, host or port, and the redirect policy below also
//! refuses https -> http downgrades and stops after 10 hops.

mod auth;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use tokio::sync::Mutex;

use crate::credentials::Credential;
use crate::reference::api_host;
use auth::{parse_challenge, AuthState, Challenge};
use tls::build_http;

pub use tls::{
    ca_files, is_loopback, registry_ca_certificates, registry_cert_dirs, registry_client_identity,
};

/// Cap on manifests, configs and token responses (c/image and containerd use 4 MiB too).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;
/// Cap on error bodies we read to explain a failure.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Where CA certificates for a registry `HOST[:PORT]` are looked for: every `*.crt` in
/// `<dir>/HOST[:PORT]/` for each of these.
pub const DEFAULT_CERTS_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot connect to {registry}: {detail}")]
    Connect { registry: String, detail: String },
    #[error("tls error talking to {registry}: {detail} (put the registry's CA certificate in /etc/containers/certs.d/{registry}/ca.crt, or use --tls-verify=false)")]
    Tls { registry: String, detail: String },
    #[error("network error reading {url}: {detail}")]
    Body { url: String, detail: String },
    #[error("unauthorized: {detail} (run `gcr login {registry}`)")]
    Unauthorized { registry: String, detail: String },
    #[error("{url}: registry answered {status}{}", describe_body(.code, .message))]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        /// A 429's or 503's `Retry-After`, in seconds (the HTTP-date form is not used).
        retry_after: Option<u64>,
    },
    #[error("{what} from {url} is larger than the {} MiB limit", .limit / (1024 * 1024))]
    TooLarge {
        what: String,
        url: String,
        limit: u64,
    },
    #[error("invalid answer from {registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("cannot read CA certificate {path}: {detail}")]
    Certificate { path: PathBuf, detail: String },
}

fn describe_body(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({}: {m})", c.to_ascii_lowercase()),
        (Some(c), None) => format!(" ({})", c.to_ascii_lowercase()),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

impl RegistryError {
    /// Whether trying again may help: connection problems, cut-off bodies, 5xx, 429, 408.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Body { .. } => true,
            RegistryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// How long the registry asked to wait before the next attempt (`Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            RegistryError::Status {
                retry_after: Some(secs),
                ..
            } => Some(std::time::Duration::from_secs(*secs)),
            _ => None,
        }
    }

    /// The HTTP status, if the registry answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
impl RegistryError {
    /// An error status without body or `Retry-After` (for tests).
    pub(crate) fn bare_status(status: u16) -> RegistryError {
        RegistryError::Status {
            url: "u".into(),
            status,
            code: None,
            message: None,
            retry_after: None,
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates and refuse plain HTTP to non-loopback registries.
    pub tls_verify: bool,
    /// Directories holding `HOST[:PORT]/*.crt` CA certificates and `*.cert`/`*.key` client
    /// certificates.
    pub certs_dirs: Vec<PathBuf>,
    /// A directory with the registry's `*.crt`, `*.cert` and `*.key` files directly, used
    /// instead of `certs_dirs` (Podman's `--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// Per-request timeout for connecting.
    pub connect_timeout: Duration,
    /// Timeout between two reads of a body (a stalled transfer fails, a slow one does not).
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            certs_dirs: DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect(),
            cert_dir: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A connection to one registry, shared by every request of a pull (or push).
pub struct RegistryClient {
    registry: String,
    base: Url,
    http: reqwest::Client,
    credential: Option<Credential>,
    auth: Mutex<AuthState>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl RegistryClient {
    /// Connects to `registry` (as written in references) and learns how it authenticates.
    ///
    /// Scheme: HTTPS with the system roots plus certs.d CAs; loopback registries without a
    /// certs.d entry use plain HTTP; with `tls_verify` off, HTTPS accepting any certificate,
    /// falling back to plain HTTP when the TLS connection cannot be made.
    pub async fn connect(
        registry: &str,
        credential: Option<Credential>,
        opts: &ClientOptions,
    ) -> Result<RegistryClient, RegistryError> {
        let host = api_host(registry).to_string();
        let dirs = registry_cert_dirs(registry, opts);
        let cas = registry_ca_certificates(&dirs)?;
        let has_ca = !cas.is_empty();
        let cas: Vec<reqwest::Certificate> = cas.into_iter().map(|(_, c)| c).collect();
        let identity = registry_client_identity(&dirs)?.map(|(_, id)| id);
        let connect_err = |detail: String| RegistryError::Connect {
            registry: registry.to_string(),
            detail,
        };
        let url = |scheme: &str| {
            Url::parse(&format!("{scheme}://{host}/"))
                .map_err(|e| connect_err(format!("invalid registry address: {e}")))
        };

        // Loopback registries are "insecure" the way Docker treats 127.0.0.0/8: plain HTTP
        // first, then HTTPS accepting any certificate; a certs.d CA means verified HTTPS.
        let mut candidates = Vec::new();
        let http = |cas: Vec<reqwest::Certificate>, accept_invalid: bool| {
            build_http(opts, cas, identity.clone(), accept_invalid)
        };
        if has_ca && opts.tls_verify {
            candidates.push((url("https")?, http(cas, false)));
        } else if is_loopback(registry) && opts.tls_verify {
            candidates.push((url("http")?, http(cas.clone(), false)));
            candidates.push((url("https")?, http(cas, true)));
        } else if opts.tls_verify {
            candidates.push((url("https")?, http(cas, false)));
        } else {
            candidates.push((url("https")?, http(cas.clone(), true)));
            candidates.push((url("http")?, http(cas, true)));
        }

        let mut first_err = None;
        let count = candidates.len();
        for (i, (base, http)) in candidates.into_iter().enumerate() {
            let http = http.map_err(|d| connect_err(format!("cannot set up http client: {d}")))?;
            let client = RegistryClient {
                registry: registry.to_string(),
                base,
                http,
                credential: credential.clone(),
                auth: Mutex::new(AuthState::default()),
            };
            let has_next = i + 1 < count;
            match client.ping().await {
                Ok(true) => return Ok(client),
                Ok(false) if has_next => {
                    tracing::debug!(
                        registry,
                        scheme = client.scheme(),
                        "not a registry answer; trying the next scheme"
                    );
                }
                Ok(false) => return Ok(client),
                Err(e @ (RegistryError::Connect { .. } | RegistryError::Tls { .. }))
                    if has_next =>
                {
                    tracing::debug!(registry, error = %e, "trying the next scheme");
                    // The first scheme is the expected one; its error explains best.
                    first_err.get_or_insert(e);
                }
                Err(e @ (RegistryError::Connect { .. } | RegistryError::Tls { .. })) => {
                    return Err(first_err.unwrap_or(e))
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or_else(|| connect_err("no endpoint to try".to_string())))
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `http` or `https`, as chosen by `connect`.
    pub fn scheme(&self) -> &str {
        self.base.scheme()
    }

    pub fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    /// GET /v2/ and remember the challenge. Returns whether the answer looks like a registry
    /// (200, 401 or the distribution API header), which decides falling back to another scheme.
    async fn ping(&self) -> Result<bool, RegistryError> {
        let url = self.url("/v2/")?;
        let resp = self.send_raw(&url, None, None, None).await?;
        let api_header = resp
            .headers()
            .contains_key("docker-distribution-api-version");
        let (challenge, registry_like) = match resp.status() {
            StatusCode::UNAUTHORIZED => {
                let challenge =
                    parse_challenge(resp.headers()).ok_or_else(|| RegistryError::Protocol {
                        registry: self.registry.clone(),
                        detail: "401 without a usable WWW-Authenticate header".to_string(),
                    })?;
                (challenge, true)
            }
            s if s.is_success() => (Challenge::None, true),
            s if s.is_server_error() => {
                return Err(self.status_error(resp, &url).await);
            }
            // Some registries do not serve /v2/ itself; later requests tell more.
            _ => (Challenge::None, api_header),
        };
        self.auth.lock().await.challenge = Some(challenge);
        Ok(registry_like)
    }

    /// Checks that the configured credential is accepted (for `login`).
    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("cannot build a url for {path:?}: {e}"),
            })
    }

    fn unauthorized(&self, detail: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            detail: detail.to_string(),
        }
    }

    async fn send_raw(
        &self,
        url: &Url,
        accept: Option<&str>,
        authorization: Option<HeaderValue>,
        from: Option<u64>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self.http.get(url.clone());
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept);
        }
        if let Some(from) = from {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        if let Some(auth) = authorization {
            req = req.header(AUTHORIZATION, auth);
        }
        req.send()
            .await
            .map_err(|e| classify_send_error(&self.registry, &e))
    }

    /// GET `path` with authentication for `scope`; a 401 makes one more attempt with a fresh
    /// challenge and token. Returns the response when its status is a success.
    pub async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        self.get_from(path, accept, scope, None).await
    }

    /// [`get`](Self::get) with `Range: bytes=FROM-` when `from` is given (resuming a blob;
    /// the caller checks for 206).
    pub async fn get_from(
        &self,
        path: &str,
        accept: Option<&str>,
        scope: &str,
        from: Option<u64>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(path)?;
        // Docker Hub answers 401 to an anonymous token for a repository that does not exist,
        // so say both.
        let rejected = |sent_auth| match (self.credential.is_some(), sent_auth) {
            (true, _) => {
                "the registry rejected the credentials for this repository (or it does not exist)"
            }
            (false, true) => "access denied: the repository does not exist or requires credentials",
            (false, false) => "the registry requires credentials",
        };
        self.authenticated(&url, scope, true, rejected, |auth| {
            self.send_raw(&url, accept, auth, from)
        })
        .await
    }

    /// Builds a Status error from a failed response, reading its error JSON if small.
    async fn status_error(&self, resp: reqwest::Response, url: &Url) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let (code, message) = match read_capped(resp, url, "error body", MAX_ERROR_BODY).await {
            Ok(body) => parse_error_body(&body),
            Err(_) => (None, None),
        };
        RegistryError::Status {
            url: redact(url),
            status,
            code,
            message,
            retry_after,
        }
    }
}

/// Requests other than GET (push): any method, a body made afresh for each attempt.
impl RegistryClient {
    /// Sends `method` to `target` (a path on the registry, or an absolute URL such as an upload
    /// `Location`) with authentication for `scope` (space-separated scopes allowed); a 401 makes
    /// one more attempt with a fresh challenge and token. Credentials are only sent to the
    /// registry's own scheme, host and port. Returns the response when its status is a success
    /// (redirects are followed for bodiless requests).
    pub async fn send(
        &self,
        method: reqwest::Method,
        target: &str,
        headers: HeaderMap,
        body: &(dyn Fn() -> Option<reqwest::Body> + Send + Sync),
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = if target.starts_with("http://") || target.starts_with("https://") {
            Url::parse(target).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("invalid url {target:?} from the registry: {e}"),
            })?
        } else {
            self.url(target)?
        };
        let same_origin = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default();
        let rejected = |_| {
            if self.credential.is_some() {
                "the registry rejected the credentials for this repository"
            } else {
                "the registry requires credentials"
            }
        };
        self.authenticated(&url, scope, same_origin, rejected, |auth| {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(auth) = auth {
                req = req.header(AUTHORIZATION, auth);
            }
            if let Some(body) = body() {
                req = req.body(body);
            }
            async move {
                req.send()
                    .await
                    .map_err(|e| classify_send_error(&self.registry, &e))
            }
        })
        .await
    }
}

/// The `errors[0]` of a distribution error body.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => match b.errors.into_iter().next() {
            Some(e) => (e.code, e.message),
            None => (None, None),
        },
        Err(_) => (None, None),
    }
}

/// Reads a whole body, refusing more than `limit` bytes (checked on Content-Length first).
pub async fn read_capped(
    mut resp: reqwest::Response,
    url: &Url,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        url: redact(url),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(RegistryError::Body {
                    url: redact(url),
                    detail: error_chain(&e),
                })
            }
        }
    }
}

/// A URL without its query (signed CDN URLs carry tokens there) for messages and logs.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    u.to_string()
}

/// An error and its sources, joined, without reqwest's "error sending request for url" noise.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn classify_send_error(registry: &str, err: &reqwest::Error) -> RegistryError {
    let mut detail = error_chain(err);
    if let Some(url) = err.url() {
        detail = detail.replace(url.as_str(), &redact(url));
    }
    let lower = detail.to_ascii_lowercase();
    let tls = lower.contains("certificate")
        || lower.contains("tls handshake")
        || lower.contains("invalidcontenttype")
        || lower.contains("corrupt message");
    if tls {
        RegistryError::Tls {
            registry: registry.to_string(),
            detail,
        }
    } else if err.is_connect() || err.is_timeout() || err.is_request() {
        RegistryError::Connect {
            registry: registry.to_string(),
            detail,
        }
    } else if err.is_redirect() {
        RegistryError::Protocol {
            registry: registry.to_string(),
            detail,
        }
    } else {
        RegistryError::Body {
            url: err.url().map(redact).unwrap_or_default(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        let status = RegistryError::bare_status;
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(400).is_transient());
        assert!(RegistryError::Connect {
            registry: "r".into(),
            detail: "refused".into()
        }
        .is_transient());
        assert!(RegistryError::Body {
            url: "u".into(),
            detail: "reset".into()
        }
        .is_transient());
        assert!(!RegistryError::Unauthorized {
            registry: "r".into(),
            detail: "d".into()
        }
        .is_transient());
        assert!(!RegistryError::Tls {
            registry: "r".into(),
            detail: "d".into()
        }
        .is_transient());
        assert!(!RegistryError::TooLarge {
            what: "m".into(),
            url: "u".into(),
            limit: 1
        }
        .is_transient());
    }

    #[test]
    fn error_bodies_and_messages() {
        let (c, m) = parse_error_body(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(c.as_deref(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(m.as_deref(), Some("manifest unknown"));
        assert_eq!(parse_error_body(b"<html>"), (None, None));
        let e = RegistryError::TooLarge {
            what: "manifest".into(),
            url: "http://h/v2/x".into(),
            limit: MAX_DOCUMENT_SIZE,
        };
        assert_eq!(
            e.to_string(),
            "manifest from http://h/v2/x is larger than the 4 MiB limit"
        );
        let u = Url::parse("https://cdn.example/blob?X-Amz-Signature=secret").unwrap();
        assert_eq!(redact(&u), "https://cdn.example/blob");
    }
}
