//! The HTTP side of the distribution API: endpoint and TLS choice, the auth challenge, the
//! bearer-token flow, capped bodies and errors classified for retries.
//!
//! Built on reqwest directly, not on oci-client: oci-client reads manifest and token bodies
//! whole with no size cap, turns a failed token request into an anonymous request (so a wrong
//! password surfaces as a confusing 401 later), and hides HTTP statuses needed to decide what
//! to retry. Credentials never follow a redirect to another host: reqwest drops
//! `Authorization` on any change of scheme, host or port, and the redirect policy below also
//! refuses https -> http downgrades and stops after 10 hops.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use tokio::sync::Mutex;

use crate::credentials::Credential;
use crate::reference::api_host;

/// Cap on manifests, configs and token responses (c/image and containerd use 4 MiB too).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;
/// Cap on error bodies we read to explain a failure.
const MAX_ERROR_BODY: u64 = 64 * 1024;
const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("gcr/", env!("CARGO_PKG_VERSION"));

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

/// What the registry's `WWW-Authenticate` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope.
    tokens: Vec<(String, String)>,
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

/// Whether `registry` (`host[:port]`) is a loopback address, where plain HTTP is allowed.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_part(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn host_part(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(i) => &registry[..=i],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

/// The directories whose files configure TLS for `registry`: `--cert-dir`, or
/// `CERTS_DIR/HOST[:PORT]` for each certs.d directory.
pub fn registry_cert_dirs(registry: &str, opts: &ClientOptions) -> Vec<PathBuf> {
    match &opts.cert_dir {
        Some(dir) => vec![dir.clone()],
        None => opts.certs_dirs.iter().map(|d| d.join(registry)).collect(),
    }
}

/// The client certificate for mutual TLS, as Docker and Podman find it: `NAME.cert` with
/// `NAME.key` beside it (the first pair by name). A certificate without its key is an error.
pub fn registry_client_identity(
    dirs: &[PathBuf],
) -> Result<Option<(PathBuf, reqwest::Identity)>, RegistryError> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut certs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cert"))
            .collect();
        certs.sort();
        let Some(cert) = certs.into_iter().next() else {
            continue;
        };
        let key = cert.with_extension("key");
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| RegistryError::Certificate {
                path: path.clone(),
                detail: if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "the client certificate {} needs its key here",
                        cert.display()
                    )
                } else {
                    e.to_string()
                },
            })
        };
        let mut pem = read(&cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(&key)?);
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|e| RegistryError::Certificate {
                path: cert.clone(),
                detail: format!("not a usable certificate and key pair: {}", error_chain(&e)),
            })?;
        return Ok(Some((cert, identity)));
    }
    Ok(None)
}

/// Reads every CA certificate (`*.crt`) in `dirs` (from [`registry_cert_dirs`]).
pub fn registry_ca_certificates(
    dirs: &[PathBuf],
) -> Result<Vec<(PathBuf, reqwest::Certificate)>, RegistryError> {
    let mut certs = Vec::new();
    for host_dir in dirs {
        let Ok(entries) = std::fs::read_dir(host_dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        paths.sort();
        for path in paths {
            let pem = std::fs::read(&path).map_err(|e| RegistryError::Certificate {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let bundle = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Certificate {
                    path: path.clone(),
                    detail: error_chain(&e),
                }
            })?;
            if bundle.is_empty() {
                return Err(RegistryError::Certificate {
                    path,
                    detail: "no PEM certificate in the file".to_string(),
                });
            }
            certs.extend(bundle.into_iter().map(|c| (path.clone(), c)));
        }
    }
    Ok(certs)
}

/// The redirect policy: at most 10 hops, never from https to http.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            return attempt.error("refusing a redirect from https to plain http");
        }
        attempt.follow()
    })
}

fn build_http(
    opts: &ClientOptions,
    cas: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
    accept_invalid: bool,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(redirect_policy())
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.read_timeout)
        .tls_certs_merge(cas)
        .danger_accept_invalid_certs(accept_invalid);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| error_chain(&e))
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
    pub async fn verify_credential(&self) -> Result<(), RegistryError> {
        let challenge = self.auth.lock().await.challenge.clone();
        match challenge {
            Some(Challenge::Bearer { realm, service }) => {
                // A token request with credentials and no scope is how Docker logs in.
                self.fetch_token(&realm, service.as_deref(), None)
                    .await
                    .map(|_| ())
            }
            Some(Challenge::Basic) => {
                let url = self.url("/v2/")?;
                let auth = self.basic_header()?;
                let resp = self.send_raw(&url, None, auth, None).await?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        Err(self.unauthorized("username or password rejected"))
                    }
                    _ => Err(self.status_error(resp, &url).await),
                }
            }
            Some(Challenge::None) | None => Ok(()),
        }
    }

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

    fn basic_header(&self) -> Result<Option<HeaderValue>, RegistryError> {
        let Some(c) = &self.credential else {
            return Ok(None);
        };
        let encoded = BASE64.encode(format!("{}:{}", c.username, c.password));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: "credential contains characters not allowed in a header".to_string(),
            }
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
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

    /// The Authorization header for `scope` under the current challenge (fetching a token).
    async fn authorization(&self, scope: &str) -> Result<Option<HeaderValue>, RegistryError> {
        let challenge = self.auth.lock().await.challenge.clone();
        match challenge {
            Some(Challenge::Basic) => self.basic_header(),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(token) = self.cached_token(scope).await {
                    return bearer_header(&self.registry, &token).map(Some);
                }
                let token = self
                    .fetch_token(&realm, service.as_deref(), Some(scope))
                    .await?;
                self.auth
                    .lock()
                    .await
                    .tokens
                    .push((scope.to_string(), token.clone()));
                bearer_header(&self.registry, &token).map(Some)
            }
            Some(Challenge::None) | None => Ok(None),
        }
    }

    async fn cached_token(&self, scope: &str) -> Option<String> {
        let state = self.auth.lock().await;
        state
            .tokens
            .iter()
            .find(|(s, _)| s == scope)
            .map(|(_, t)| t.clone())
    }

    /// After a 401: whether one more attempt makes sense (a new challenge, or credentials
    /// that were sent and may have expired); the challenge is updated and the scope's token
    /// dropped for it.
    async fn renew_after_401(
        &self,
        resp: &reqwest::Response,
        sent_auth: bool,
        scope: &str,
    ) -> bool {
        let fresh = parse_challenge(resp.headers());
        let mut state = self.auth.lock().await;
        let changed = fresh.is_some() && fresh != state.challenge;
        if !(changed || sent_auth) {
            return false;
        }
        if let Some(c) = fresh {
            state.challenge = Some(c);
        }
        drop(state);
        self.forget_token(scope).await;
        true
    }

    async fn forget_token(&self, scope: &str) {
        self.auth.lock().await.tokens.retain(|(s, _)| s != scope);
    }

    /// The bearer-token flow: GET realm?service=..&scope=.. with basic credentials if any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            detail: format!("invalid token realm {realm:?}: {e}"),
        })?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("token realm {realm:?} is not an http(s) url"),
            });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            // Several scopes (a push that mounts from another repository) are several params.
            for s in scope.into_iter().flat_map(str::split_whitespace) {
                q.append_pair("scope", s);
            }
        }
        let resp = match &self.credential {
            // An identity token is a refresh token: OAuth2's POST form, as Docker sends it.
            Some(c) if c.username == crate::credentials::IDENTITY_TOKEN_USER => {
                let mut post_url = url.clone();
                post_url.set_query(None);
                // A URL's query serializer is the form encoding (application/x-www-form-urlencoded).
                let mut form = post_url.clone();
                {
                    let mut pairs = form.query_pairs_mut();
                    pairs
                        .append_pair("grant_type", "refresh_token")
                        .append_pair("refresh_token", &c.password)
                        .append_pair("client_id", "gcr");
                    if let Some(s) = service {
                        pairs.append_pair("service", s);
                    }
                    if let Some(s) = scope {
                        pairs.append_pair("scope", s);
                    }
                }
                let body = form.query().unwrap_or_default().to_string();
                self.http
                    .post(post_url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| classify_send_error(&self.registry, &e))?
            }
            _ => {
                let auth = self.basic_header()?;
                self.send_raw(&url, None, auth, None).await?
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(if self.credential.is_some() {
                "username or password rejected by the token service"
            } else {
                "the registry requires credentials"
            }));
        }
        if !status.is_success() {
            return Err(self.status_error(resp, &url).await);
        }
        let body = read_capped(resp, &url, "token response", MAX_DOCUMENT_SIZE).await?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("token response is not valid json: {e}"),
            })?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: "token response holds no token".to_string(),
            })
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
        for attempt in 0..2 {
            let auth = self.authorization(scope).await?;
            let sent_auth = auth.is_some();
            let resp = self.send_raw(&url, accept, auth, from).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED {
                if attempt == 0 && self.renew_after_401(&resp, sent_auth, scope).await {
                    continue;
                }
                // Docker Hub answers 401 to an anonymous token for a repository that does
                // not exist, so say both.
                return Err(self.unauthorized(match (self.credential.is_some(), sent_auth) {
                    (true, _) => "the registry rejected the credentials for this repository (or it does not exist)",
                    (false, true) => "access denied: the repository does not exist or requires credentials",
                    (false, false) => "the registry requires credentials",
                }));
            }
            if status == StatusCode::FORBIDDEN {
                return Err(self.unauthorized("access to this repository is denied"));
            }
            return Err(self.status_error(resp, &url).await);
        }
        Err(self.unauthorized("the registry keeps asking for authentication"))
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
        for attempt in 0..2 {
            let auth = if same_origin {
                self.authorization(scope).await?
            } else {
                None
            };
            let sent_auth = auth.is_some();
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
            let resp = req
                .send()
                .await
                .map_err(|e| classify_send_error(&self.registry, &e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED {
                if attempt == 0 && self.renew_after_401(&resp, sent_auth, scope).await {
                    continue;
                }
                return Err(self.unauthorized(if self.credential.is_some() {
                    "the registry rejected the credentials for this repository"
                } else {
                    "the registry requires credentials"
                }));
            }
            if status == StatusCode::FORBIDDEN {
                return Err(self.unauthorized("access to this repository is denied"));
            }
            return Err(self.status_error(resp, &url).await);
        }
        Err(self.unauthorized("the registry keeps asking for authentication"))
    }
}

fn bearer_header(registry: &str, token: &str) -> Result<HeaderValue, RegistryError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| RegistryError::Protocol {
            registry: registry.to_string(),
            detail: "token contains characters not allowed in a header".to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
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

/// Parses `WWW-Authenticate`: `Bearer realm="..",service="..",scope=".."` or `Basic ...`.
fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        let (scheme, params) = text.split_once(' ').unwrap_or((text, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let params = parse_auth_params(params);
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            let realm = get("realm")?;
            return Some(Challenge::Bearer {
                realm,
                service: get("service"),
            });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `k="v", k2=v2` pairs, quoted strings may hold commas and escaped quotes.
fn parse_auth_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = quoted[end.min(quoted.len())..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
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

/// For tests and diagnostics: the CA files that would be used for `registry`.
pub fn ca_files(registry: &str, certs_dirs: &[PathBuf]) -> Vec<PathBuf> {
    certs_dirs
        .iter()
        .map(|d| d.join(registry))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p: &PathBuf| p.extension().is_some_and(|x| x == "crt"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn challenges() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
            ),
        );
        assert_eq!(
            parse_challenge(&h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="Registry Realm""#),
        );
        assert_eq!(parse_challenge(&h), Some(Challenge::Basic));
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer service="x""#),
        );
        assert_eq!(parse_challenge(&h), None);
        assert_eq!(
            parse_auth_params(r#"realm="a,\"b", service=c ,scope="d""#),
            vec![
                ("realm".to_string(), "a,\"b".to_string()),
                ("service".to_string(), "c".to_string()),
                ("scope".to_string(), "d".to_string())
            ]
        );
    }

    #[test]
    fn transient_classification() {
        let status = |s: u16| RegistryError::Status {
            url: "u".into(),
            status: s,
            code: None,
            message: None,
            retry_after: None,
        };
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

    #[test]
    fn certs_d_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = ClientOptions {
            certs_dirs: vec![tmp.path().join("containers"), tmp.path().join("docker")],
            ..ClientOptions::default()
        };
        let dirs = registry_cert_dirs("127.0.0.1:5443", &opts);
        assert!(registry_ca_certificates(&dirs).unwrap().is_empty());
        let host = opts.certs_dirs[0].join("127.0.0.1:5443");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "not a certificate").unwrap();
        let e = registry_ca_certificates(&dirs).unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
        // Files not ending in .crt (client keys, certs) are not CAs.
        std::fs::remove_file(host.join("ca.crt")).unwrap();
        std::fs::write(host.join("client.key"), "x").unwrap();
        assert!(registry_ca_certificates(&dirs).unwrap().is_empty());
        assert!(ca_files("127.0.0.1:5443", &opts.certs_dirs).is_empty());
        // A client certificate needs its key; a lone key is no client certificate.
        assert!(registry_client_identity(&dirs).unwrap().is_none());
        std::fs::remove_file(host.join("client.key")).unwrap();
        std::fs::write(host.join("client.cert"), "x").unwrap();
        let e = registry_client_identity(&dirs).unwrap_err().to_string();
        assert!(
            e.contains("client.key") && e.contains("needs its key"),
            "{e}"
        );
        // --cert-dir replaces the per-host lookup.
        let opts = ClientOptions {
            cert_dir: Some(tmp.path().join("mine")),
            ..opts
        };
        assert_eq!(
            registry_cert_dirs("127.0.0.1:5443", &opts),
            [tmp.path().join("mine")]
        );
    }
}
