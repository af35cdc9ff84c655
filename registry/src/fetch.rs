//! Plain HTTP(S) downloads for `ADD <url>` in builds: no registry protocol, no credentials.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url}: only http:// and https:// are supported")]
    Scheme { url: String },
    #[error("cannot download {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("cannot download {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot download {url}: larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written.
    pub size: u64,
    /// The `Last-Modified` header as Unix seconds (BuildKit gives the file that mtime).
    pub last_modified: Option<i64>,
}

/// Downloads `url` into the new file `dest` (streamed, at most `limit` bytes), following
/// redirects. System CA roots; no credentials are ever sent.
pub async fn fetch_url(url: &str, dest: &Path, limit: u64) -> Result<Fetched, FetchError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(FetchError::Scheme { url: url.into() });
    }
    let http = |e: reqwest::Error| FetchError::Http {
        url: url.into(),
        reason: crate::client::error_chain(&e),
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("gcr/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(http)?;
    let mut response = client.get(url).send().await.map_err(http)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    let last_modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|t| t.timestamp());
    let write_err = |source| FetchError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(write_err)?;
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(FetchError::TooLarge {
                url: url.into(),
                limit,
            });
        }
        file.write_all(&chunk).map_err(write_err)?;
    }
    file.flush().map_err(write_err)?;
    Ok(Fetched {
        size,
        last_modified,
    })
}
