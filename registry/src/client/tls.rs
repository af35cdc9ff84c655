//! TLS and endpoints: loopback registries, certs.d CA and client certificates, the HTTP
//! client with its redirect policy.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{error_chain, ClientOptions, RegistryError};

const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("gcr/", env!("CARGO_PKG_VERSION"));

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
        let Some(cert) = files_ending(dir, "cert").into_iter().next() else {
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
        for path in files_ending(host_dir, "crt") {
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

pub(super) fn build_http(
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

/// For tests and diagnostics: the CA files that would be used for `registry`.
pub fn ca_files(registry: &str, certs_dirs: &[PathBuf]) -> Vec<PathBuf> {
    certs_dirs
        .iter()
        .flat_map(|d| files_ending(&d.join(registry), "crt"))
        .collect()
}

/// The files of `dir` named `*.EXTENSION`, sorted; none when `dir` cannot be read.
fn files_ending(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    paths.sort();
    paths
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
