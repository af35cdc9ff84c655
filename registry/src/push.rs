//! `push`: an image from the store to a registry. Every blob the registry lacks is sent (a HEAD
//! first; a cross-repository mount when another repository on the same registry is known to
//! hold it; otherwise an upload streamed from the blob file, one PUT or PATCH chunks), the
//! config after the layers, and last the manifest with its stored bytes and media type, so that
//! the pushed image has the digest the store knows.

use std::collections::HashMap;
use std::io::{self, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream::{self, TryStreamExt};
use gcr_storage::{Digest, ImageRecord, Store, StoreError};
use reqwest::header::{
    HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::client::{RegistryClient, RegistryError};
use crate::manifest::{parse_document, Document, ManifestError};
use crate::reference::Reference;
use crate::transfer::{
    blocking, content_digest, transfer_error_kind, transfer_events, transfer_options,
};

/// Bytes read from a blob file per body chunk (and between two progress events).
const READ_CHUNK: usize = 256 * 1024;
/// Repositories tried as mount sources for one blob.
const MAX_MOUNT_SOURCES: usize = 3;

transfer_options! {
    /// How to push.
    pub struct PushOptions {
        /// Blobs uploaded at once.
        pub max_concurrent_uploads: usize = 3,
        /// Upload blobs in PATCH chunks of this many bytes; `None`: one PUT streaming the whole
        /// blob (a monolithic upload).
        pub chunk_size: Option<u64> = None,
        /// Try cross-repository mounts from other repositories of the same registry.
        pub mount: bool = true,
    }
}

transfer_events! {
    /// What a push reports as it goes (for progress bars or plain lines).
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
        /// The manifest is stored under the destination.
        ManifestPushed { digest: Digest, size: u64 },
    }
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

transfer_error_kind! {
    pub enum PushErrorKind {
        #[error("blob {digest}: {source}")]
        Blob {
            digest: Digest,
            #[source]
            source: RegistryError,
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
    }
    transient: |e| match e {
        PushErrorKind::Registry(e) | PushErrorKind::Blob { source: e, .. } => e.is_transient(),
        _ => false,
    }
}

/// One blob to send.
#[derive(Debug, Clone)]
pub(crate) struct BlobJob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    /// Repositories of the same registry that may hold it, best first.
    pub(crate) mount_from: Vec<String>,
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

/// A multi-platform image (`image.index` set) goes as every platform's image by digest,
/// then its index under the destination; any other image as [`push_image`].
async fn push_inner(
    store: &Store,
    image: &ImageRecord,
    destination: &Reference,
    opts: &PushOptions,
    events: &UnboundedSender<PushEvent>,
) -> Result<PushedImage, PushErrorKind> {
    let Some(index_digest) = image.index.clone() else {
        return push_image(store, image, destination, opts, events).await;
    };
    let (children, index) = {
        let store = store.clone();
        let image = image.clone();
        blocking::<PushErrorKind, _, StoreError>(move || {
            Ok((store.platform_images(&image)?, store.index_bytes(&image)?))
        })
        .await?
    };
    let index = index.ok_or_else(|| {
        PushErrorKind::Internal(format!("the index {index_digest} of the image is missing"))
    })?;
    let mut pushed = PushedImage {
        destination: destination.to_string(),
        manifest_digest: index_digest.clone(),
        manifest_size: index.len() as u64,
        uploaded: 0,
        mounted: 0,
        existing: 0,
    };
    for child in &children {
        let by_digest = destination.with_digest(child.manifest_digest.as_str());
        let one = push_image(store, child, &by_digest, opts, events).await?;
        pushed.uploaded += one.uploaded;
        pushed.mounted += one.mounted;
        pushed.existing += one.existing;
    }
    let tag = destination
        .tag()
        .or(destination.digest())
        .unwrap_or(crate::reference::DEFAULT_TAG)
        .to_string();
    if destination.tag().is_none()
        && destination
            .digest()
            .is_some_and(|d| d != index_digest.as_str())
    {
        return Err(PushErrorKind::DestinationDigest {
            wanted: tag,
            actual: index_digest,
        });
    }
    let retry = opts.retry(events);
    let client = opts
        .connect::<PushErrorKind, _>(destination, &retry)
        .await?;
    put_manifest(
        &client,
        &retry,
        destination.repository(),
        &tag,
        INDEX_MEDIA_TYPE,
        index,
        &index_digest,
        events,
    )
    .await?;
    Ok(pushed)
}

/// Media type of an OCI image index (what gcr stores a multi-platform build as).
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Puts a manifest or index, byte for byte, and checks the digest the registry stored.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn put_manifest(
    client: &RegistryClient,
    retry: &crate::retry::Retry<'_, PushEvent>,
    repo: &str,
    tag_or_digest: &str,
    media_type: &str,
    bytes: Vec<u8>,
    digest: &Digest,
    events: &UnboundedSender<PushEvent>,
) -> Result<u64, PushErrorKind> {
    let scope = push_scope(repo);
    let path = format!("/v2/{repo}/manifests/{tag_or_digest}");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, header_value(media_type)?);
    let body_bytes = bytes::Bytes::from(bytes);
    let resp = retry
        .run("pushing the manifest", || {
            let headers = headers.clone();
            let body_bytes = body_bytes.clone();
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
    if let Some(stored) = content_digest(&resp) {
        if stored != digest.as_str() {
            return Err(PushErrorKind::ManifestDigest {
                expected: digest.clone(),
                actual: stored.to_string(),
            });
        }
    }
    let size = body_bytes.len() as u64;
    let _ = events.send(PushEvent::ManifestPushed {
        digest: digest.clone(),
        size,
    });
    Ok(size)
}

async fn push_image(
    store: &Store,
    image: &ImageRecord,
    destination: &Reference,
    opts: &PushOptions,
    events: &UnboundedSender<PushEvent>,
) -> Result<PushedImage, PushErrorKind> {
    // Keep garbage collection from deleting the blobs while they are read.
    let lease_store = store.clone();
    let _lease = blocking::<PushErrorKind, _, _>(move || lease_store.lease()).await?;
    let (manifest, sources) = {
        let store = store.clone();
        let image = image.clone();
        let dest = destination.clone();
        let mount = opts.mount;
        blocking::<PushErrorKind, _, StoreError>(move || {
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

    let retry = opts.retry(events);
    let client = opts
        .connect::<PushErrorKind, _>(destination, &retry)
        .await?;
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
    let manifest_size = put_manifest(
        &client,
        &retry,
        destination.repository(),
        &tag_or_digest,
        &media_type,
        manifest,
        &manifest_digest,
        events,
    )
    .await?;
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
pub(crate) struct Counts {
    uploaded: AtomicUsize,
    mounted: AtomicUsize,
    existing: AtomicUsize,
}

pub(crate) struct BlobContext<'a> {
    pub(crate) client: &'a RegistryClient,
    pub(crate) store: &'a Store,
    pub(crate) repo: &'a str,
    pub(crate) opts: &'a PushOptions,
    pub(crate) events: &'a UnboundedSender<PushEvent>,
    pub(crate) counts: &'a Counts,
}

/// How a blob reached the registry.
enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

impl BlobContext<'_> {
    pub(crate) async fn push_blob(&self, job: &BlobJob) -> Result<(), PushErrorKind> {
        // Fail before talking to the registry when the store lacks the blob.
        let path = self.store.blob_path(&job.digest);
        if !path.is_file() {
            return Err(PushErrorKind::Store(StoreError::MissingBlob {
                digest: job.digest.clone(),
            }));
        }
        let what = format!("blob {}", job.digest);
        let outcome = self
            .opts
            .retry(self.events)
            .run(&what, || self.push_blob_once(job))
            .await?;
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

    /// A request without a body (HEAD, a POST opening an upload or a mount, a DELETE).
    async fn send_bodiless(
        &self,
        method: Method,
        target: &str,
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        self.client
            .send(method, target, HeaderMap::new(), &|| None, scope)
            .await
    }

    async fn push_blob_once(&self, job: &BlobJob) -> Result<Outcome, PushErrorKind> {
        let repo = self.repo;
        let scope = push_scope(repo);
        let err = self.blob_err(&job.digest);
        match self
            .send_bodiless(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{}", job.digest),
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
            let resp = match self.send_bodiless(Method::POST, &path, &mount_scope).await {
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
                    .send_bodiless(Method::DELETE, location.as_str(), &scope)
                    .await;
            } else {
                session = Some(location);
            }
        }
        let mut location = match session {
            Some(l) => l,
            None => {
                let resp = self
                    .send_bodiless(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &scope)
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
        if let Some(stored) = content_digest(&resp) {
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
#[path = "push_tests.rs"]
mod tests;
