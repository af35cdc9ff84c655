//! Registry credentials in Docker-compatible auth files.
//!
//! Read from, first match wins: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$XDG_CONFIG_HOME/containers/auth.json`, `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`). Each file may hold `auths` (base64 `auth` = `user:password`, or
//! `username`/`password`), `credHelpers` (per registry) and `credsStore` (default helper), the
//! helpers being `docker-credential-<name>` programs speaking Docker's get/store/erase protocol.
//! `login` writes to `$REGISTRY_AUTH_FILE` if set, else the Docker config file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};

use crate::reference::DEFAULT_REGISTRY;

/// Docker's historical key for Docker Hub in `auths` and for credential helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const MAX_AUTH_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read auth file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth file {path} is not valid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("auth file {path}: the entry for {registry} has an invalid \"auth\" field (expected base64 of user:password)")]
    BadAuthField { path: PathBuf, registry: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("cannot write auth file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot locate the auth file: neither REGISTRY_AUTH_FILE, DOCKER_CONFIG nor HOME is set"
    )]
    NoHome,
}

/// The user name that marks a credential as an identity (OAuth2 refresh) token, as Docker and
/// credential helpers spell it.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A username and password (or token used as a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The auth files consulted for lookups, in order.
pub fn search_paths() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut paths = Vec::new();
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        paths.push(p);
    }
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        paths.push(run.join("containers/auth.json"));
    }
    if let Some(cfg) = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config"))) {
        paths.push(cfg.join("containers/auth.json"));
    }
    if let Some(p) = docker_config_path() {
        paths.push(p);
    }
    paths
}

fn docker_config_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DOCKER_CONFIG")
        .map(|d| d.join("config.json"))
        .or_else(|| env("HOME").map(|h| h.join(".docker/config.json")))
}

/// The file `login` writes to: `$REGISTRY_AUTH_FILE`, else the Docker config file.
pub fn login_path() -> Result<PathBuf, CredentialsError> {
    std::env::var_os("REGISTRY_AUTH_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(docker_config_path)
        .ok_or(CredentialsError::NoHome)
}

/// Finds credentials for `registry` (as in references: `docker.io`, `host:port`), looking at
/// repository-scoped keys (`host/ns/repo`, as podman writes) before the registry's own key.
pub fn lookup(
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credential>, CredentialsError> {
    for path in search_paths() {
        let Some(doc) = read_auth_file(&path)? else {
            continue;
        };
        if let Some(found) = lookup_in(&path, &doc, registry, repository)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Looks `registry` up in one parsed auth file.
fn lookup_in(
    path: &Path,
    doc: &Map<String, Value>,
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credential>, CredentialsError> {
    if let Some(helper) = helper_for(doc, registry, true) {
        return helper_get(&helper, registry);
    }
    if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
        let mut scopes = Vec::new();
        if let Some(repo) = repository {
            let mut scope = format!("{registry}/{repo}");
            loop {
                scopes.push(scope.clone());
                match scope.rfind('/') {
                    Some(i) if i > registry.len() => scope.truncate(i),
                    _ => break,
                }
            }
        }
        for scope in &scopes {
            if let Some(entry) = auths.get(scope.as_str()) {
                if let Some(c) = decode_entry(path, registry, entry)? {
                    return Ok(Some(c));
                }
            }
        }
        // Registry-wide entries only: a repository-scoped key ("host/org/repo") must not
        // answer for other repositories, whatever order the file lists them in.
        for (key, entry) in auths {
            if key_registry(key) == registry && is_registry_wide(key) {
                if let Some(c) = decode_entry(path, registry, entry)? {
                    return Ok(Some(c));
                }
            }
        }
    }
    if let Some(helper) = helper_for(doc, registry, false) {
        return helper_get(&helper, registry);
    }
    Ok(None)
}

/// The helper for `registry`: from `credHelpers` when `specific`, else `credsStore`.
fn helper_for(doc: &Map<String, Value>, registry: &str, specific: bool) -> Option<String> {
    let name = if specific {
        doc.get("credHelpers")
            .and_then(Value::as_object)?
            .iter()
            .find(|(k, _)| key_registry(k) == registry)
            .and_then(|(_, v)| v.as_str())?
    } else {
        doc.get("credsStore").and_then(Value::as_str)?
    };
    // The name becomes part of a program name: refuse anything but a plain word.
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    plain.then(|| name.to_string())
}

/// The registry an `auths`/`credHelpers` key refers to: scheme and path dropped, Docker Hub's
/// aliases folded into `docker.io`.
fn key_registry(key: &str) -> &str {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
        h => h,
    }
}

/// True for keys naming a whole registry: `host`, `https://host/`, `https://host/v1/`.
fn is_registry_wide(key: &str) -> bool {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let path = no_scheme.split_once('/').map(|(_, p)| p).unwrap_or("");
    matches!(path.trim_matches('/'), "" | "v1" | "v2")
}

fn decode_entry(
    path: &Path,
    registry: &str,
    entry: &Value,
) -> Result<Option<Credential>, CredentialsError> {
    let bad = || CredentialsError::BadAuthField {
        path: path.to_path_buf(),
        registry: registry.to_string(),
    };
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        if !auth.is_empty() {
            let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
    }
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let (Some(u), Some(p)) = (field("username"), field("password")) {
        return Ok(Some(Credential {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    if let Some(token) = field("identitytoken") {
        // An OAuth2 refresh token from `docker login` (Azure, Google...): Docker hands it on
        // with this user name, and the token flow trades it for access tokens.
        return Ok(Some(Credential {
            username: IDENTITY_TOKEN_USER.to_string(),
            password: token.to_string(),
        }));
    }
    let _ = path;
    Ok(None)
}

/// Reads and parses an auth file; `None` if it does not exist.
fn read_auth_file(path: &Path) -> Result<Option<Map<String, Value>>, CredentialsError> {
    let read_err = |source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if meta.len() > MAX_AUTH_FILE {
        return Err(CredentialsError::Parse {
            path: path.to_path_buf(),
            reason: "larger than 4 MiB".to_string(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(CredentialsError::Parse {
            path: path.to_path_buf(),
            reason: "not a JSON object".to_string(),
        }),
        Err(e) => Err(CredentialsError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The server URL handed to credential helpers.
fn helper_server(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_KEY
    } else {
        registry
    }
}

fn run_helper(
    helper: &str,
    registry: &str,
    action: &str,
    input: &[u8],
) -> Result<(bool, String), CredentialsError> {
    let fail = |message: String| CredentialsError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Ok((out.status.success(), text))
}

fn helper_get(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialsError> {
    let (ok, text) = run_helper(helper, registry, "get", helper_server(registry).as_bytes())?;
    if !ok {
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CredentialsError::Helper {
            helper: helper.to_string(),
            registry: registry.to_string(),
            message: text,
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let reply: Reply = serde_json::from_str(&text).map_err(|e| CredentialsError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message: format!("malformed reply: {e}"),
    })?;
    Ok(Some(Credential {
        username: reply.username,
        password: reply.secret,
    }))
}

/// Saves credentials for `registry` in the login file (through its credential helper if it
/// names one). Returns the file written or consulted.
pub fn store(registry: &str, credential: &Credential) -> Result<PathBuf, CredentialsError> {
    let path = login_path()?;
    let mut doc = read_auth_file(&path)?.unwrap_or_default();
    let helper = helper_for(&doc, registry, true).or_else(|| helper_for(&doc, registry, false));
    if let Some(helper) = helper {
        let input = serde_json::json!({
            "ServerURL": helper_server(registry),
            "Username": credential.username,
            "Secret": credential.password,
        });
        let (ok, text) = run_helper(&helper, registry, "store", input.to_string().as_bytes())?;
        if !ok {
            return Err(CredentialsError::Helper {
                helper,
                registry: registry.to_string(),
                message: text,
            });
        }
        return Ok(path);
    }
    let key = auths_key(&path, registry);
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Value::Object(auths) = auths {
        // Drop aliases of the same registry so the new entry is the one found.
        auths.retain(|k, _| key_registry(k) != registry || *k == key);
        let encoded = BASE64.encode(format!("{}:{}", credential.username, credential.password));
        auths.insert(key, serde_json::json!({ "auth": encoded }));
    }
    write_auth_file(&path, &doc)?;
    Ok(path)
}

/// Removes credentials for `registry` from the login file (and its helper). Returns whether
/// anything was removed.
pub fn erase(registry: &str) -> Result<bool, CredentialsError> {
    let path = login_path()?;
    let Some(mut doc) = read_auth_file(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(helper) =
        helper_for(&doc, registry, true).or_else(|| helper_for(&doc, registry, false))
    {
        let (ok, text) = run_helper(
            &helper,
            registry,
            "erase",
            helper_server(registry).as_bytes(),
        )?;
        if ok {
            removed = true;
        } else if !text.contains("not found") {
            return Err(CredentialsError::Helper {
                helper,
                registry: registry.to_string(),
                message: text,
            });
        }
    }
    if let Some(Value::Object(auths)) = doc.get_mut("auths") {
        let before = auths.len();
        auths.retain(|k, _| key_registry(k) != registry);
        if auths.len() != before {
            removed = true;
            write_auth_file(&path, &doc)?;
        }
    }
    Ok(removed)
}

/// Docker writes Docker Hub as `https://index.docker.io/v1/` in its own config file.
fn auths_key(path: &Path, registry: &str) -> String {
    let is_docker_config = docker_config_path().is_some_and(|d| d == path);
    if registry == DEFAULT_REGISTRY && is_docker_config {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Writes `doc` to `path` atomically: a 0600 temp file in the same directory, fsync, rename.
/// A symlinked auth file (dotfile managers) is updated at its target, as Docker does.
fn write_auth_file(path: &Path, doc: &Map<String, Value>) -> Result<(), CredentialsError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(path).map_err(|source| CredentialsError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            resolved.as_path()
        }
        _ => path,
    };
    let write_err = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(write_err)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".to_string());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut body =
        serde_json::to_vec_pretty(&Value::Object(doc.clone())).map_err(|e| write_err(e.into()))?;
    body.push(b'\n');
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(u: &str, p: &str) -> Credential {
        Credential {
            username: u.into(),
            password: p.into(),
        }
    }

    fn parse(text: &str) -> Map<String, Value> {
        match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => panic!("bad test json"),
        }
    }

    #[test]
    fn decodes_auth_field_and_aliases() {
        let path = Path::new("/x/config.json");
        let doc = parse(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5443": {{"auth": "{}"}},
                "http://quay.io/": {{"username": "q", "password": "qp"}},
                "ghcr.io/org/repo": {{"auth": "{}"}},
                "ghcr.io": {{"auth": "{}"}}
            }}}}"#,
            BASE64.encode("hub:hubpw"),
            BASE64.encode("u:p:with:colons"),
            BASE64.encode("scoped:s"),
            BASE64.encode("wide:w"),
        ));
        let get = |r: &str, repo: Option<&str>| lookup_in(path, &doc, r, repo).unwrap();
        assert_eq!(get("docker.io", None), Some(cred("hub", "hubpw")));
        assert_eq!(
            get("127.0.0.1:5443", None),
            Some(cred("u", "p:with:colons"))
        );
        assert_eq!(get("quay.io", None), Some(cred("q", "qp")));
        assert_eq!(get("ghcr.io", Some("org/repo")), Some(cred("scoped", "s")));
        assert_eq!(get("ghcr.io", Some("org/other")), Some(cred("wide", "w")));
        assert_eq!(get("example.com", None), None);
    }

    #[test]
    fn bad_auth_field_is_an_error_naming_the_file() {
        let doc = parse(r#"{"auths": {"h:1": {"auth": "!!notbase64"}}}"#);
        let e = lookup_in(Path::new("/a/auth.json"), &doc, "h:1", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/a/auth.json") && e.contains("h:1"), "{e}");
        let doc = parse(&format!(
            r#"{{"auths": {{"h:1": {{"auth": "{}"}}}}}}"#,
            BASE64.encode("nocolon")
        ));
        assert!(lookup_in(Path::new("/a"), &doc, "h:1", None).is_err());
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let doc = parse(r#"{"credHelpers": {"reg.example": "gcr-test-no-such-helper"}}"#);
        let e = lookup_in(Path::new("/a"), &doc, "reg.example", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-gcr-test-no-such-helper"),
            "{e}"
        );
        // A helper name that is not a plain word is ignored, never executed.
        let doc = parse(r#"{"credsStore": "../../bin/sh"}"#);
        assert_eq!(
            lookup_in(Path::new("/a"), &doc, "x.io", None).unwrap(),
            None
        );
    }

    /// Environment-dependent tests run in one test to avoid racing on process env.
    #[test]
    fn store_lookup_erase_through_files_and_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::env::set_var("HOME", &home);
        std::env::remove_var("DOCKER_CONFIG");
        std::env::remove_var("XDG_RUNTIME_DIR");
        std::env::remove_var("XDG_CONFIG_HOME");
        std::env::remove_var("REGISTRY_AUTH_FILE");

        // Docker config: created 0600, other keys kept, Docker Hub under its v1 key.
        let cfg = home.join(".docker/config.json");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(&cfg, r#"{"psFormat": "table", "auths": {}}"#).unwrap();
        assert_eq!(store("docker.io", &cred("a", "b")).unwrap(), cfg);
        store("127.0.0.1:5443", &cred("c", "d")).unwrap();
        let doc = read_auth_file(&cfg).unwrap().unwrap();
        assert_eq!(doc["psFormat"], "table");
        assert!(doc["auths"]["https://index.docker.io/v1/"].is_object());
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            lookup("docker.io", Some("library/x")).unwrap(),
            Some(cred("a", "b"))
        );
        assert_eq!(
            lookup("127.0.0.1:5443", None).unwrap(),
            Some(cred("c", "d"))
        );
        assert!(erase("127.0.0.1:5443").unwrap());
        assert!(!erase("127.0.0.1:5443").unwrap());
        assert_eq!(lookup("127.0.0.1:5443", None).unwrap(), None);
        assert_eq!(lookup("docker.io", None).unwrap(), Some(cred("a", "b")));

        // A symlinked config is written through to its target.
        let target = home.join("dotfiles-config.json");
        std::fs::rename(&cfg, &target).unwrap();
        std::os::unix::fs::symlink(&target, &cfg).unwrap();
        store("quay.io", &cred("q", "r")).unwrap();
        assert!(std::fs::symlink_metadata(&cfg)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(lookup("quay.io", None).unwrap(), Some(cred("q", "r")));
        assert!(std::fs::read_to_string(&target)
            .unwrap()
            .contains("quay.io"));

        // REGISTRY_AUTH_FILE wins for writes and reads; a fresh file is created with 0600.
        let authfile = tmp.path().join("sub/dir/auth.json");
        std::env::set_var("REGISTRY_AUTH_FILE", &authfile);
        store("docker.io", &cred("x", "y")).unwrap();
        let doc = read_auth_file(&authfile).unwrap().unwrap();
        assert!(doc["auths"]["docker.io"].is_object());
        let mode = std::fs::metadata(&authfile).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(lookup("docker.io", None).unwrap(), Some(cred("x", "y")));
        assert!(erase("docker.io").unwrap());
        // Falls back to the Docker config once the auth file has no entry.
        assert_eq!(lookup("docker.io", None).unwrap(), Some(cred("a", "b")));

        // $XDG_RUNTIME_DIR/containers/auth.json (podman's) is read before the Docker config.
        std::env::remove_var("REGISTRY_AUTH_FILE");
        let run = tmp.path().join("run");
        std::fs::create_dir_all(run.join("containers")).unwrap();
        std::fs::write(
            run.join("containers/auth.json"),
            format!(
                r#"{{"auths": {{"docker.io": {{"auth": "{}"}}}}}}"#,
                BASE64.encode("podman:pw")
            ),
        )
        .unwrap();
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        assert_eq!(
            lookup("docker.io", None).unwrap(),
            Some(cred("podman", "pw"))
        );
        std::env::remove_var("XDG_RUNTIME_DIR");
        std::env::set_var("REGISTRY_AUTH_FILE", &authfile);

        // A credential helper (a real program on PATH) for credHelpers and credsStore.
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let store_dir = tmp.path().join("helper-store");
        std::fs::create_dir_all(&store_dir).unwrap();
        // Keys files by server URL; stores the JSON it is given and returns it on get.
        let script = format!(
            r#"#!/bin/sh
d={}
case "$1" in
get) k=$(cat | tr '/:' '__'); if [ -f "$d/$k" ]; then cat "$d/$k"; else echo "credentials not found in native keychain"; exit 1; fi;;
store) cat > "$d/last"; k=$(sed 's/.*"ServerURL":"\([^"]*\)".*/\1/' "$d/last" | tr '/:' '__'); cp "$d/last" "$d/$k";;
erase) k=$(cat | tr '/:' '__'); rm "$d/$k";;
esac
"#,
            store_dir.display()
        );
        let helper = bin.join("docker-credential-gcrtest");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let old_path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{old_path}", bin.display()));
        std::fs::write(
            &authfile,
            r#"{"credHelpers": {"helped.example:5000": "gcrtest"}}"#,
        )
        .unwrap();
        assert_eq!(lookup("helped.example:5000", None).unwrap(), None);
        store("helped.example:5000", &cred("hu", "hp")).unwrap();
        assert_eq!(
            lookup("helped.example:5000", None).unwrap(),
            Some(cred("hu", "hp"))
        );
        // The helper was used: the file holds no secret.
        let text = std::fs::read_to_string(&authfile).unwrap();
        assert!(!text.contains("hp"), "{text}");
        assert!(erase("helped.example:5000").unwrap());
        assert_eq!(lookup("helped.example:5000", None).unwrap(), None);

        std::fs::write(&authfile, r#"{"credsStore": "gcrtest"}"#).unwrap();
        store("docker.io", &cred("hub", "s3cret")).unwrap();
        assert_eq!(
            lookup("docker.io", None).unwrap(),
            Some(cred("hub", "s3cret"))
        );
        std::env::set_var("PATH", old_path);
        std::env::remove_var("REGISTRY_AUTH_FILE");
    }
}
