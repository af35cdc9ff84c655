//! Authentication: the registry's `WWW-Authenticate` challenge, basic credentials, and the
//! bearer-token flow (tokens cached by scope, renewed after a 401).

use std::future::Future;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::{classify_send_error, read_capped, RegistryClient, RegistryError, MAX_DOCUMENT_SIZE};

/// What the registry's `WWW-Authenticate` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Default)]
pub(super) struct AuthState {
    pub(super) challenge: Option<Challenge>,
    /// Bearer tokens by scope.
    tokens: Vec<(String, String)>,
}

impl RegistryClient {
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

    /// Sends the request `request` makes (given the Authorization header for `scope`, or none
    /// when `authenticate` is false) until the registry takes it: a 401 makes one more attempt
    /// with a fresh challenge and token, and a last one is explained by `rejected(sent_auth)`.
    /// Returns the response when its status is a success.
    pub(super) async fn authenticated<F, Fut>(
        &self,
        url: &Url,
        scope: &str,
        authenticate: bool,
        rejected: impl Fn(bool) -> &'static str,
        mut request: F,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: FnMut(Option<HeaderValue>) -> Fut,
        Fut: Future<Output = Result<reqwest::Response, RegistryError>>,
    {
        for attempt in 0..2 {
            let auth = if authenticate {
                self.authorization(scope).await?
            } else {
                None
            };
            let sent_auth = auth.is_some();
            let resp = request(auth).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED {
                if attempt == 0 && self.renew_after_401(&resp, sent_auth, scope).await {
                    continue;
                }
                return Err(self.unauthorized(rejected(sent_auth)));
            }
            if status == StatusCode::FORBIDDEN {
                return Err(self.unauthorized("access to this repository is denied"));
            }
            return Err(self.status_error(resp, url).await);
        }
        Err(self.unauthorized("the registry keeps asking for authentication"))
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

/// Parses `WWW-Authenticate`: `Bearer realm="..",service="..",scope=".."` or `Basic ...`.
pub(super) fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
