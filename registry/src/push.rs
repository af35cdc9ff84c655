//! `push`: an image from the store to a registry. Every blob the registry lacks is sent (a HEAD
//! first; a cross-repository mount when another repository on the same registry is known to
//! hold it; otherwise an upload streamed from the blob file, one PUT or PATCH chunks), the
//! config after the layers, and last the manifest with its stored bytes and media type, so that
//! the pushed image has the digest the store knows.

use std::collections::HashMap;
use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, TryStreamExt};
use gcr_storage::{Digest, ImageRecord, Store, StoreError};
use reqwest::header::{
    HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::client::{ClientOptions, RegistryClient, RegistryError, DEFAULT_CERTS_DIRS};
use crate::credentials::{self, Credential, CredentialsError};
use crate::manifest::{parse_document, Document, ManifestError};
use crate::reference::Reference;

/// Bytes read from a blob file per body chunk (and between two progress events).
const READ_CHUNK: usize = 256 * 1024;
/// Repositories tried as mount sources for one blob.
const MAX_MOUNT_SOURCES: usize = 3;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Verify TLS; when false, accept any certificate and fall back to plain HTTP.
    pub tls_verify: bool,
    /// Directories holding `HOST[:PORT]/*.crt` CA certificates (and client certificates).
    pub certs_dirs: Vec<PathBuf>,
    /// The registry's certificates directly in one directory, instead of `certs_dirs`.
    pub cert_dir: Option<PathBuf>,
    /// Credentials to use instead of those in the auth files.
    pub credential: Option<Credential>,
    /// Blobs uploaded at once.
    pub max_concurrent_uploads: usize,
    /// Further attempts after a transient failure (connection, 5xx, 429).
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub retry_delay: Duration,
    /// Upload blobs in PATCH chunks of this many bytes; `None`: one PUT streaming the whole
    /// blob (a monolithic upload).
    pub chunk_size: Option<u64>,
    /// Try cross-repository mounts from other repositories of the same registry.
    pub mount: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            tls_verify: true,
            certs_dirs: DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect(),
            cert_dir: None,
            credential: None,
            max_concurrent_uploads: 3,
            retries: 4,
            retry_delay: Duration::from_millis(250),
            chunk_size: None,
            mount: true,
        }
    }
}

/// What a push reports as it goes (for progress bars or plain lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// Connected; about to send the blobs of the manifest `manifest_digest`.
    Preparing {
        destination: String,
        manifest_digest: Digest,
    },
    /// The registry has the blob already.
    BlobExists { digest: Digest },
    /// The registry mounted the blob from another repository (`from`).
    BlobMounted { digest: Digest, from: String },
    /// An upload began (`size` bytes).
    BlobStarted { digest: Digest, size: u64 },
    /// Bytes of a blob sent so far.
    BlobProgress { digest: Digest, bytes_done: u64 },
    /// The registry accepted the uploaded blob.
    BlobDone { digest: Digest },
    /// A transient failure; trying again after `delay`.
    Retrying {
        what: String,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// The manifest is stored under the destination.
    ManifestPushed { digest: Digest, size: u64 },
}

/// A pushed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Where it went (the full reference).
    pub destination: String,
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    /// Blobs uploaded, mounted, and found already present.
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
}

/// A failed push: the destination and the cause, on one line.
#[derive(Debug, thiserror::Error)]
#[error("pushing {destination}: {kind}")]
pub struct PushError {
    pub destination: String,
    pub kind: PushErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum PushErrorKind {
    #[error(transparent)]
    Registry(RegistryError),
    #[error("blob {digest}: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: RegistryError,
    },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        last: Box<PushErrorKind>,
    },
    #[error("the registry gave no upload location for blob {digest}")]
    NoLocation { digest: Digest },
    #[error("the stored manifest {digest} cannot be pushed: {source}")]
    Manifest {
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("the destination names digest {wanted}, but the image's manifest is {actual}")]
    DestinationDigest { wanted: String, actual: Digest },
    #[error("the registry stored the manifest as {actual}, not {expected}")]
    ManifestDigest { expected: Digest, actual: String },
    #[error(transparent)]
    Credentials(CredentialsError),
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl crate::retry::Retryable for PushErrorKind {
    fn gave_up(attempts: u32, last: Self) -> Self {
        PushErrorKind::GaveUp {
            attempts,
            last: Box::new(last),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PushErrorKind::Registry(e) => e.retry_after(),
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            PushErrorKind::Registry(e) | PushErrorKind::Blob { source: e, .. } => e.is_transient(),
            _ => false,
        }
    }
}

impl From<RegistryError> for PushErrorKind {
    fn from(e: RegistryError) -> Self {
        PushErrorKind::Registry(e)
    }
}

impl From<StoreError> for PushErrorKind {
    fn from(e: StoreError) -> Self {
        PushErrorKind::Store(e)
    }
}

/// Runs `op` with retries, reporting each one as a `Retrying` event.
async fn with_retries<T, F, Fut>(
    opts: &PushOptions,
    events: &UnboundedSender<PushEvent>,
    what: &str,
    op: F,
) -> Result<T, PushErrorKind>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PushErrorKind>>,
{
    let on_retry = |attempt, delay, e: &PushErrorKind| {
        let _ = events.send(PushEvent::Retrying {
            what: what.to_string(),
            attempt,
            delay,
            reason: e.to_string(),
        });
    };
    crate::retry::with_retries(opts.retries, opts.retry_delay, what, on_retry, op).await
}

/// One blob to send.
#[derive(Debug, Clone)]
struct BlobJob {
    digest: Digest,
    size: u64,
    /// Repositories of the same registry that may hold it, best first.
    mount_from: Vec<String>,
}

/// Pushes the stored image `image` to `destination`, reporting progress on `events`.
pub async fn push(
    store: &Store,
    image: &ImageRecord,
    destination: &Reference,
    opts: &PushOptions,
    events: UnboundedSender<PushEvent>,
) -> Result<PushedImage, PushError> {
    push_inner(store, image, destination, opts, &events)
        .await
        .map_err(|kind| PushError {
            destination: destination.to_string(),
            kind,
        })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, PushErrorKind> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PushErrorKind::Internal(e.to_string()))?
        .map_err(PushErrorKind::Store)
}

async fn push_inner(
    store: &Store,
    image: &ImageRecord,
    destination: &Reference,
    opts: &PushOptions,
    events: &UnboundedSender<PushEvent>,
) -> Result<PushedImage, PushErrorKind> {
    // Keep garbage collection from deleting the blobs while they are read.
    let lease_store = store.clone();
    let _lease = blocking(move || lease_store.lease()).await?;
    let (manifest, sources) = {
        let store = store.clone();
        let image = image.clone();
        let dest = destination.clone();
        let mount = opts.mount;
        blocking(move || {
            let manifest = store.image_manifest_bytes(&image)?;
            let sources = if mount {
                mount_sources(&store, &image, &dest)?
            } else {
                HashMap::new()
            };
            Ok((manifest, sources))
        })
        .await?
    };
    let manifest_digest = Digest::of(&manifest);
    let media_type = image.manifest_media_type.clone();
    let Document::Image { config, layers } =
        parse_document(&manifest, Some(&media_type)).map_err(|source| PushErrorKind::Manifest {
            digest: manifest_digest.clone(),
            source,
        })?
    else {
        return Err(PushErrorKind::Manifest {
            digest: manifest_digest,
            source: ManifestError::Unknown,
        });
    };
    let tag_or_digest = match (destination.tag(), destination.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(wanted)) => {
            if wanted != manifest_digest.as_str() {
                return Err(PushErrorKind::DestinationDigest {
                    wanted: wanted.to_string(),
                    actual: manifest_digest,
                });
            }
            wanted.to_string()
        }
        (None, None) => crate::reference::DEFAULT_TAG.to_string(),
    };

    let job = |digest: &str, size: u64| -> Result<BlobJob, PushErrorKind> {
        let digest: Digest =
            digest
                .parse()
                .map_err(|e: gcr_storage::DigestError| PushErrorKind::Manifest {
                    digest: manifest_digest.clone(),
                    source: ManifestError::Descriptor(e.to_string()),
                })?;
        Ok(BlobJob {
            mount_from: sources.get(&digest).cloned().unwrap_or_default(),
            digest,
            size,
        })
    };
    let mut layer_jobs: Vec<BlobJob> = Vec::new();
    for layer in &layers {
        // Foreign layers (Windows base layers) are fetched from their urls, never pushed.
        if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            continue;
        }
        let j = job(&layer.digest, layer.size())?;
        if !layer_jobs.iter().any(|x| x.digest == j.digest) {
            layer_jobs.push(j);
        }
    }
    let config_job = job(&config.digest, config.size())?;

    let credential = match &opts.credential {
        Some(c) => Some(c.clone()),
        None => {
            let registry = destination.registry().to_string();
            let repository = destination.repository().to_string();
            tokio::task::spawn_blocking(move || credentials::lookup(&registry, Some(&repository)))
                .await
                .map_err(|e| PushErrorKind::Internal(e.to_string()))?
                .map_err(PushErrorKind::Credentials)?
        }
    };
    let client_opts = ClientOptions {
        tls_verify: opts.tls_verify,
        certs_dirs: opts.certs_dirs.clone(),
        cert_dir: opts.cert_dir.clone(),
        ..ClientOptions::default()
    };
    let client = with_retries(opts, events, "connecting", || {
        let credential = credential.clone();
        let client_opts = &client_opts;
        async move {
            RegistryClient::connect(destination.registry(), credential, client_opts)
                .await
                .map_err(PushErrorKind::from)
        }
    })
    .await?;
    let client = Arc::new(client);
    let _ = events.send(PushEvent::Preparing {
        destination: destination.to_string(),
        manifest_digest: manifest_digest.clone(),
    });

    let counts = Counts::default();
    let ctx = BlobContext {
        client: &client,
        store,
        repo: destination.repository(),
        opts,
        events,
        counts: &counts,
    };
    stream::iter(layer_jobs.into_iter().map(Ok))
        .try_for_each_concurrent(opts.max_concurrent_uploads.max(1), |job| {
            let ctx = &ctx;
            async move { ctx.push_blob(&job).await }
        })
        .await?;
    ctx.push_blob(&config_job).await?;

    // The manifest, byte for byte.
    let repo = destination.repository();
    let scope = push_scope(repo);
    let path = format!("/v2/{repo}/manifests/{tag_or_digest}");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, header_value(&media_type)?);
    let body_bytes = bytes::Bytes::from(manifest);
    let resp = with_retries(opts, events, "pushing the manifest", || {
        let headers = headers.clone();
        let body_bytes = body_bytes.clone();
        let client = &client;
        let path = &path;
        let scope = &scope;
        async move {
            let body = move || Some(reqwest::Body::from(body_bytes.clone()));
            client
                .send(Method::PUT, path, headers, &body, scope)
                .await
                .map_err(PushErrorKind::from)
        }
    })
    .await?;
    if let Some(stored) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if stored != manifest_digest.as_str() {
            return Err(PushErrorKind::ManifestDigest {
                expected: manifest_digest,
                actual: stored.to_string(),
            });
        }
    }
    let manifest_size = body_bytes.len() as u64;
    let _ = events.send(PushEvent::ManifestPushed {
        digest: manifest_digest.clone(),
        size: manifest_size,
    });
    Ok(PushedImage {
        destination: destination.to_string(),
        manifest_digest,
        manifest_size,
        uploaded: counts.uploaded.load(Ordering::SeqCst),
        mounted: counts.mounted.load(Ordering::SeqCst),
        existing: counts.existing.load(Ordering::SeqCst),
    })
}

/// For every blob of the store's images: the repositories on `dest`'s registry (other than
/// `dest`'s) whose images hold it, those of `image` itself first.
fn mount_sources(
    store: &Store,
    image: &ImageRecord,
    dest: &Reference,
) -> Result<HashMap<Digest, Vec<String>>, StoreError> {
    let mut images = store.images()?;
    images.sort_by_key(|r| r.id != image.id);
    let mut out: HashMap<Digest, Vec<String>> = HashMap::new();
    for rec in &images {
        for name in &rec.names {
            let Ok(r) = Reference::parse(name) else {
                continue;
            };
            if r.registry() != dest.registry() || r.repository() == dest.repository() {
                continue;
            }
            for blob in rec.layer_blobs.iter().chain(std::iter::once(&rec.id)) {
                let repos = out.entry(blob.clone()).or_default();
                if repos.len() < MAX_MOUNT_SOURCES && !repos.iter().any(|x| x == r.repository()) {
                    repos.push(r.repository().to_string());
                }
            }
        }
    }
    Ok(out)
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn header_value(s: &str) -> Result<HeaderValue, PushErrorKind> {
    HeaderValue::from_str(s)
        .map_err(|_| PushErrorKind::Internal(format!("{s:?} is not a valid header value")))
}

#[derive(Default)]
struct Counts {
    uploaded: AtomicUsize,
    mounted: AtomicUsize,
    existing: AtomicUsize,
}

struct BlobContext<'a> {
    client: &'a RegistryClient,
    store: &'a Store,
    repo: &'a str,
    opts: &'a PushOptions,
    events: &'a UnboundedSender<PushEvent>,
    counts: &'a Counts,
}

/// How a blob reached the registry.
enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

impl BlobContext<'_> {
    async fn push_blob(&self, job: &BlobJob) -> Result<(), PushErrorKind> {
        // Fail before talking to the registry when the store lacks the blob.
        let path = self.store.blob_path(&job.digest);
        if !path.is_file() {
            return Err(PushErrorKind::Store(StoreError::MissingBlob {
                digest: job.digest.clone(),
            }));
        }
        let what = format!("blob {}", job.digest);
        let outcome =
            with_retries(self.opts, self.events, &what, || self.push_blob_once(job)).await?;
        match outcome {
            Outcome::Existed => {
                self.counts.existing.fetch_add(1, Ordering::SeqCst);
                let _ = self.events.send(PushEvent::BlobExists {
                    digest: job.digest.clone(),
                });
            }
            Outcome::Mounted(from) => {
                self.counts.mounted.fetch_add(1, Ordering::SeqCst);
                let _ = self.events.send(PushEvent::BlobMounted {
                    digest: job.digest.clone(),
                    from,
                });
            }
            Outcome::Uploaded => {
                self.counts.uploaded.fetch_add(1, Ordering::SeqCst);
                let _ = self.events.send(PushEvent::BlobDone {
                    digest: job.digest.clone(),
                });
            }
        }
        Ok(())
    }

    fn blob_err(&self, digest: &Digest) -> impl Fn(RegistryError) -> PushErrorKind {
        let digest = digest.clone();
        move |source| PushErrorKind::Blob {
            digest: digest.clone(),
            source,
        }
    }

    async fn push_blob_once(&self, job: &BlobJob) -> Result<Outcome, PushErrorKind> {
        let repo = self.repo;
        let scope = push_scope(repo);
        let err = self.blob_err(&job.digest);
        let no_body = || None;
        match self
            .client
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{}", job.digest),
                HeaderMap::new(),
                &no_body,
                &scope,
            )
            .await
        {
            Ok(_) => return Ok(Outcome::Existed),
            Err(RegistryError::Status { status: 404, .. }) => {}
            Err(e) => return Err(err(e)),
        }

        // A mount: 201 means done, 202 opened an ordinary upload session instead.
        let mut session: Option<Url> = None;
        for (i, from) in job.mount_from.iter().enumerate() {
            let mount_scope = format!("{scope} repository:{from}:pull");
            let path = format!("/v2/{repo}/blobs/uploads/?mount={}&from={from}", job.digest);
            let resp = match self
                .client
                .send(
                    Method::POST,
                    &path,
                    HeaderMap::new(),
                    &no_body,
                    &mount_scope,
                )
                .await
            {
                Ok(r) => r,
                // A source we may not read: try the next, or upload.
                Err(RegistryError::Unauthorized { .. }) => continue,
                Err(e) => return Err(err(e)),
            };
            if resp.status() == StatusCode::CREATED {
                tracing::debug!(digest = %job.digest, from, "mounted");
                return Ok(Outcome::Mounted(from.clone()));
            }
            let location = upload_location(&resp, &job.digest)?;
            if i + 1 < job.mount_from.len() {
                // Close the session the refused mount opened before trying another source.
                let _ = self
                    .client
                    .send(
                        Method::DELETE,
                        location.as_str(),
                        HeaderMap::new(),
                        &no_body,
                        &scope,
                    )
                    .await;
            } else {
                session = Some(location);
            }
        }
        let mut location = match session {
            Some(l) => l,
            None => {
                let resp = self
                    .client
                    .send(
                        Method::POST,
                        &format!("/v2/{repo}/blobs/uploads/"),
                        HeaderMap::new(),
                        &no_body,
                        &scope,
                    )
                    .await
                    .map_err(&err)?;
                upload_location(&resp, &job.digest)?
            }
        };

        let _ = self.events.send(PushEvent::BlobStarted {
            digest: job.digest.clone(),
            size: job.size,
        });
        let path = self.store.blob_path(&job.digest);
        let octet = HeaderValue::from_static("application/octet-stream");
        let mut sent_before_put = 0u64;
        if let Some(chunk) = self.opts.chunk_size.filter(|c| *c > 0) {
            // PATCH chunks, each answered with the next location.
            let mut offset = 0u64;
            while offset < job.size {
                let len = chunk.min(job.size - offset);
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, octet.clone());
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                headers.insert(
                    CONTENT_RANGE,
                    header_value(&format!("{}-{}", offset, offset + len - 1))?,
                );
                let body = self.file_body(&path, &job.digest, offset, len);
                let resp = self
                    .client
                    .send(Method::PATCH, location.as_str(), headers, &body, &scope)
                    .await
                    .map_err(&err)?;
                location = upload_location(&resp, &job.digest)?;
                offset += len;
            }
            sent_before_put = job.size;
        }
        location
            .query_pairs_mut()
            .append_pair("digest", job.digest.as_str());
        let put_len = job.size - sent_before_put;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, octet);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(put_len));
        let resp = if put_len > 0 {
            let body = self.file_body(&path, &job.digest, 0, put_len);
            self.client
                .send(Method::PUT, location.as_str(), headers, &body, &scope)
                .await
        } else {
            let body = || Some(reqwest::Body::from(Vec::new()));
            self.client
                .send(Method::PUT, location.as_str(), headers, &body, &scope)
                .await
        }
        .map_err(&err)?;
        if let Some(stored) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if stored != job.digest.as_str() {
                return Err(PushErrorKind::Blob {
                    digest: job.digest.clone(),
                    source: RegistryError::Protocol {
                        registry: self.client.registry().to_string(),
                        detail: format!("the registry stored the blob as {stored}"),
                    },
                });
            }
        }
        Ok(Outcome::Uploaded)
    }

    /// A body factory: `len` bytes of the blob file from `offset`, read in chunks as they are
    /// sent (never the whole blob in memory), with progress events.
    fn file_body(
        &self,
        path: &std::path::Path,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> impl Fn() -> Option<reqwest::Body> + Send + Sync {
        let path = path.to_path_buf();
        let digest = digest.clone();
        let events = self.events.clone();
        move || {
            let path = path.clone();
            let digest = digest.clone();
            let events = events.clone();
            let state: (Option<tokio::fs::File>, u64) = (None, 0);
            let chunks = stream::try_unfold(state, move |(file, sent)| {
                let path = path.clone();
                let digest = digest.clone();
                let events = events.clone();
                async move {
                    if sent >= len {
                        return Ok::<_, io::Error>(None);
                    }
                    let mut file = match file {
                        Some(f) => f,
                        None => {
                            let mut f = tokio::fs::File::open(&path).await?;
                            f.seek(SeekFrom::Start(offset)).await?;
                            f
                        }
                    };
                    let want = usize::try_from(len - sent)
                        .unwrap_or(usize::MAX)
                        .min(READ_CHUNK);
                    let mut buf = vec![0u8; want];
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("blob file {} is shorter than its size", path.display()),
                        ));
                    }
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    let _ = events.send(PushEvent::BlobProgress {
                        digest,
                        bytes_done: offset + sent,
                    });
                    Ok(Some((bytes::Bytes::from(buf), (Some(file), sent))))
                }
            });
            Some(reqwest::Body::wrap_stream(chunks))
        }
    }
}

/// The absolute upload URL from a `Location` header (relative ones resolve against the
/// response's URL).
fn upload_location(resp: &reqwest::Response, digest: &Digest) -> Result<Url, PushErrorKind> {
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| PushErrorKind::NoLocation {
            digest: digest.clone(),
        })?;
    let url = resp
        .url()
        .join(location)
        .map_err(|_| PushErrorKind::NoLocation {
            digest: digest.clone(),
        })?;
    // Only HTTP: a `file://` or other Location is a broken registry, not a passing fault.
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(PushErrorKind::Registry(RegistryError::Protocol {
            registry: resp.url().host_str().unwrap_or_default().to_string(),
            detail: format!("the upload Location {location:?} is not an http(s) URL"),
        }));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Retryable as _;

    #[test]
    fn upload_locations_must_be_http_urls() {
        let answer = |location: &str| {
            reqwest::Response::from(
                http::Response::builder()
                    .status(202)
                    .header("Location", location)
                    .body("")
                    .unwrap(),
            )
        };
        let digest = Digest::of(b"blob");
        let url = upload_location(&answer("/v2/x/blobs/uploads/1?state=a"), &digest).unwrap();
        assert!(
            url.as_str().ends_with("/v2/x/blobs/uploads/1?state=a"),
            "{url}"
        );
        let err = upload_location(&answer("file:///etc/passwd"), &digest).unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("not an http(s) URL"), "{err}");
    }

    #[test]
    fn transient_kinds() {
        let status = |s: u16| RegistryError::Status {
            url: "u".into(),
            status: s,
            code: None,
            message: None,
            retry_after: None,
        };
        assert!(PushErrorKind::Registry(status(503)).is_transient());
        assert!(PushErrorKind::Blob {
            digest: Digest::of(b""),
            source: status(502)
        }
        .is_transient());
        assert!(!PushErrorKind::Blob {
            digest: Digest::of(b""),
            source: status(400)
        }
        .is_transient());
        assert!(!PushErrorKind::NoLocation {
            digest: Digest::of(b"")
        }
        .is_transient());
    }

    #[test]
    fn scopes() {
        assert_eq!(push_scope("a/b"), "repository:a/b:pull,push");
    }
}
