//! `pull`: reference -> manifest (or index -> platform -> manifest) -> config -> every missing
//! layer in parallel, each streamed once from the registry into `Store::ingest_layer` (which
//! hashes, decompresses, checks the diff_id and unpacks) -> `Store::commit_image`.

use std::io::{self, Read};
use std::sync::Arc;

use futures_util::stream::{self, TryStreamExt};
use gcr_storage::{Digest, ImageRecord, LayerExpectation, Store};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::client::{read_capped, RegistryClient, RegistryError, MAX_DOCUMENT_SIZE};
use crate::manifest::{
    index_platforms, parse_config, parse_document, Descriptor, Document, ManifestError,
    ACCEPT_MANIFESTS, LAYER_MEDIA_TYPES,
};
use crate::platform::{self, Platform};
use crate::reference::Reference;
use crate::transfer::{
    blocking, content_digest, transfer_error_kind, transfer_events, transfer_options,
};

/// Progress emitted while emitting less than every chunk: at least this many bytes apart.
const PROGRESS_STEP: u64 = 256 * 1024;

transfer_options! {
    /// How to pull.
    pub struct PullOptions {
        /// The platform to pick from an index; `None` means the host's.
        pub platform: Option<Platform> = None,
        /// Layers downloaded at once.
        pub max_concurrent_downloads: usize = 3,
    }
}

transfer_events! {
    /// What a pull reports as it goes (for progress bars or plain lines).
    pub enum PullEvent {
        /// Fetching the manifest of `reference`.
        Resolving { reference: String },
        /// The image manifest to pull is known (after platform selection).
        Resolved { manifest_digest: Digest },
        /// A layer download began (`size` compressed bytes).
        LayerStarted { digest: Digest, size: u64 },
        /// Compressed bytes received so far for a layer.
        LayerProgress { digest: Digest, bytes_done: u64 },
        /// A layer already in the store.
        LayerSkipped { digest: Digest },
        /// A layer is verified, unpacked and in the store.
        LayerDone { digest: Digest },
        /// The image is stored (under `PulledImage::name`).
        Committed { id: Digest },
    }
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Image ID (config digest).
    pub id: Digest,
    /// The name it was stored under.
    pub name: String,
    /// Digest of the image manifest stored (the platform's, when pulled through an index).
    pub manifest_digest: Digest,
    /// Digest of what the reference pointed at (index or manifest).
    pub resolved_digest: Digest,
    pub record: ImageRecord,
}

/// A failed pull: the reference and the cause, on one line.
#[derive(Debug, thiserror::Error)]
#[error("pulling {reference}: {kind}")]
pub struct PullError {
    pub reference: String,
    pub kind: PullErrorKind,
}

transfer_error_kind! {
    pub enum PullErrorKind {
        #[error("manifest unknown: {registry} has no image {repository}:{tag}")]
        ManifestUnknown {
            registry: String,
            repository: String,
            tag: String,
        },
        #[error("blob {digest} is unknown to the registry")]
        BlobUnknown { digest: Digest },
        #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
        DigestMismatch {
            what: String,
            expected: String,
            actual: Digest,
        },
        #[error("size mismatch for {what}: the descriptor says {expected} bytes, got {actual}")]
        SizeMismatch {
            what: String,
            expected: u64,
            actual: u64,
        },
        #[error("{what} is larger than the {} MiB limit", .limit / (1024 * 1024))]
        TooLarge { what: String, limit: u64 },
        #[error("truncated blob {digest}: the connection ended after {received} of {expected} bytes")]
        Truncated {
            digest: Digest,
            received: u64,
            expected: u64,
        },
        #[error("blob {digest} is longer than the {expected} bytes its descriptor announces (endless or wrong size); stopped reading")]
        TooLong { digest: Digest, expected: u64 },
        #[error("invalid {what}: {source}")]
        Manifest {
            what: String,
            #[source]
            source: ManifestError,
        },
        #[error("the index has no image for platform {wanted} (available: {available})")]
        NoMatchingPlatform { wanted: String, available: String },
        #[error("the image is for {actual}, not the requested platform {wanted}")]
        PlatformMismatch { wanted: String, actual: String },
        #[error("this is not a container image: its config is {config_type} (an artifact such as a Helm chart or a signature)")]
        NotAnImage { config_type: String },
        #[error("an index inside an index is not supported ({digest})")]
        NestedIndex { digest: String },
        #[error(
            "layer {digest} has media type {media_type:?}, which is not an image layer gcr can unpack"
        )]
        UnsupportedLayer { digest: String, media_type: String },
        #[error("the manifest lists {layers} layers but the config has {diff_ids} diff_ids")]
        LayerCountMismatch { layers: usize, diff_ids: usize },
        #[error("layer {digest} needs foreign urls, which gcr does not download")]
        ForeignLayer { digest: String },
    }
    transient: |e| match e {
        PullErrorKind::Registry(e) => e.is_transient(),
        PullErrorKind::Truncated { .. } => true,
        _ => false,
    }
}

pub use crate::retry::backoff;

/// Pulls `reference` into `store`, reporting progress on `events`.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    events: UnboundedSender<PullEvent>,
) -> Result<PulledImage, PullError> {
    pull_inner(store, reference, opts, &events)
        .await
        .map_err(|kind| PullError {
            reference: reference.to_string(),
            kind,
        })
}

/// A downloaded manifest or index: raw bytes, their digest, and the parsed form.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: Digest,
    pub(crate) document: Document,
}

async fn pull_inner(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    events: &UnboundedSender<PullEvent>,
) -> Result<PulledImage, PullErrorKind> {
    let _ = events.send(PullEvent::Resolving {
        reference: reference.to_string(),
    });
    let retry = opts.retry(events);
    let client = opts.connect::<PullErrorKind, _>(reference, &retry).await?;
    let repo = reference.repository();
    let scope = format!("repository:{repo}:pull");

    // The manifest (or index) the reference names.
    let top = retry
        .run("fetching the manifest", || {
            fetch_manifest(
                &client,
                reference,
                &scope,
                reference.manifest_reference(),
                None,
            )
        })
        .await?;
    let resolved_digest = top.digest.clone();

    let wanted = opts.platform.clone();
    let (manifest, chosen_platform) = match &top.document {
        Document::Image { .. } => (top, None),
        Document::Index { manifests } => {
            let want = wanted.clone().unwrap_or_else(Platform::host);
            let candidates = index_platforms(manifests);
            let Some(entry) = platform::select(&want, &candidates) else {
                // Indexes listed inside this one are not followed: say so, rather than "none".
                if let Some(nested) = manifests
                    .iter()
                    .find(|m| crate::manifest::is_index_type(&m.media_type))
                {
                    return Err(PullErrorKind::NestedIndex {
                        digest: nested.digest.clone(),
                    });
                }
                let mut available: Vec<String> =
                    candidates.iter().map(|(_, p)| p.to_string()).collect();
                available.dedup();
                return Err(PullErrorKind::NoMatchingPlatform {
                    wanted: want.to_string(),
                    available: if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    },
                });
            };
            let entry_platform = candidates
                .iter()
                .find(|(d, _)| d == entry)
                .map(|(_, p)| p.clone());
            let entry = entry.clone();
            let child = retry
                .run("fetching the platform manifest", || {
                    fetch_manifest(&client, reference, &scope, &entry.digest, Some(&entry))
                })
                .await?;
            if let Document::Index { .. } = child.document {
                return Err(PullErrorKind::NestedIndex {
                    digest: entry.digest.clone(),
                });
            }
            (child, entry_platform)
        }
    };
    let Document::Image { config, layers } = &manifest.document else {
        return Err(PullErrorKind::Internal("expected an image manifest".into()));
    };

    // An artifact (a Helm chart, a signature, ...) has a config of its own type: not an image.
    const IMAGE_CONFIG_TYPES: [&str; 4] = [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
        "application/octet-stream",
        "",
    ];
    if !IMAGE_CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(PullErrorKind::NotAnImage {
            config_type: config.media_type.clone(),
        });
    }
    let _ = events.send(PullEvent::Resolved {
        manifest_digest: manifest.digest.clone(),
    });

    // The config: small, capped, verified.
    let config_bytes = retry
        .run("fetching the config", || {
            fetch_config(&client, repo, &scope, config)
        })
        .await?;
    let summary = parse_config(&config_bytes).map_err(|source| PullErrorKind::Manifest {
        what: format!("image config {}", config.digest),
        source,
    })?;
    if let (Some(want), Some(actual)) = (&wanted, &summary.platform) {
        if chosen_platform.is_none() && !want.accepts(actual) {
            return Err(PullErrorKind::PlatformMismatch {
                wanted: want.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if summary.diff_ids.len() != layers.len() {
        return Err(PullErrorKind::LayerCountMismatch {
            layers: layers.len(),
            diff_ids: summary.diff_ids.len(),
        });
    }

    // Layers: check every one before downloading any.
    let mut jobs: Vec<LayerExpectation> = Vec::new();
    for (layer, diff_id) in layers.iter().zip(&summary.diff_ids) {
        if layer.urls.as_ref().is_some_and(|u| !u.is_empty())
            || layer.media_type.contains(".foreign.")
        {
            return Err(PullErrorKind::ForeignLayer {
                digest: layer.digest.clone(),
            });
        }
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(PullErrorKind::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        let expect = LayerExpectation {
            digest: parse_digest(&layer.digest)?,
            size: layer.size(),
            media_type: layer.media_type.clone(),
            diff_id: parse_digest(diff_id)?,
        };
        if !jobs.iter().any(|j| j.digest == expect.digest) {
            jobs.push(expect);
        }
    }

    // Keep garbage collection away from what this pull stores until it is named.
    let lease_store = store.clone();
    let _lease = blocking::<PullErrorKind, _, _>(move || lease_store.lease()).await?;

    let mut missing = Vec::new();
    for job in jobs {
        if store.has_blob(&job.digest)
            && store.has_layer(&job.diff_id)
            && store.layer_comes_from(&job.digest, &job.diff_id)
        {
            let _ = events.send(PullEvent::LayerSkipped {
                digest: job.digest.clone(),
            });
        } else {
            missing.push(job);
        }
    }
    let concurrency = opts.max_concurrent_downloads.max(1);
    stream::iter(missing.into_iter().map(Ok))
        .try_for_each_concurrent(concurrency, |job| {
            let client = Arc::clone(&client);
            let scope = scope.as_str();
            let retry = &retry;
            async move {
                let what = format!("layer {}", job.digest);
                let _ = events.send(PullEvent::LayerStarted {
                    digest: job.digest.clone(),
                    size: job.size,
                });
                retry
                    .run(&what, || {
                        fetch_layer(&client, store, repo, scope, &job, events, opts)
                    })
                    .await?;
                let _ = events.send(PullEvent::LayerDone {
                    digest: job.digest.clone(),
                });
                Ok::<(), PullErrorKind>(())
            }
        })
        .await?;

    let name = reference.store_name();
    let commit_store = store.clone();
    let names = vec![name.clone()];
    let manifest_bytes = manifest.bytes;
    let record = blocking::<PullErrorKind, _, _>(move || {
        commit_store.commit_image(&names, &manifest_bytes, &config_bytes)
    })
    .await?;
    let _ = events.send(PullEvent::Committed {
        id: record.id.clone(),
    });
    // Docker's `image pull` event: the reference as pulled.
    let attributes = std::collections::BTreeMap::from([("name".to_string(), name.clone())]);
    store.record_event(&gcr_storage::Event::new("image", "pull", &name, attributes));
    Ok(PulledImage {
        id: record.id.clone(),
        name,
        manifest_digest: manifest.digest,
        resolved_digest,
        record,
    })
}

fn parse_digest(s: &str) -> Result<Digest, PullErrorKind> {
    s.parse()
        .map_err(|e: gcr_storage::DigestError| PullErrorKind::Manifest {
            what: "descriptor".to_string(),
            source: ManifestError::Descriptor(e.to_string()),
        })
}

/// GET a manifest by tag or digest, capped at 4 MiB, verified against `expected` (a
/// descriptor from an index) or the digest in the reference, and the Docker-Content-Digest
/// header.
pub(crate) async fn fetch_manifest(
    client: &RegistryClient,
    reference: &Reference,
    scope: &str,
    tag_or_digest: &str,
    expected: Option<&Descriptor>,
) -> Result<Fetched, PullErrorKind> {
    let path = format!("/v2/{}/manifests/{}", reference.repository(), tag_or_digest);
    let resp = match client.get(&path, Some(ACCEPT_MANIFESTS), scope).await {
        Ok(r) => r,
        Err(RegistryError::Status { status: 404, .. }) => {
            return Err(PullErrorKind::ManifestUnknown {
                registry: reference.registry().to_string(),
                repository: reference.repository().to_string(),
                tag: tag_or_digest.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_digest = content_digest(&resp).map(str::to_string);
    let what = if expected.is_some() {
        format!("manifest {tag_or_digest}")
    } else {
        "manifest".to_string()
    };
    let bytes = read_document(resp, &what).await?;
    let digest = Digest::of(&bytes);
    let wanted_digest = expected
        .map(|d| d.digest.as_str())
        .or(reference.digest().filter(|d| *d == tag_or_digest));
    if let Some(want) = wanted_digest {
        if want != digest.as_str() {
            return Err(PullErrorKind::DigestMismatch {
                what: what.clone(),
                expected: want.to_string(),
                actual: digest,
            });
        }
    }
    if let Some(d) = expected {
        if d.size() != bytes.len() as u64 {
            return Err(PullErrorKind::SizeMismatch {
                what,
                expected: d.size(),
                actual: bytes.len() as u64,
            });
        }
    }
    if let Some(header) = header_digest.filter(|h| h.starts_with("sha256:")) {
        if header != digest.as_str() {
            return Err(PullErrorKind::DigestMismatch {
                what: format!("{what} (Docker-Content-Digest header)"),
                expected: header,
                actual: digest,
            });
        }
    }
    let document = parse_document(&bytes, content_type.as_deref()).map_err(|source| {
        PullErrorKind::Manifest {
            what: format!("{what} {digest}"),
            source,
        }
    })?;
    Ok(Fetched {
        bytes,
        digest,
        document,
    })
}

/// The whole body of a manifest or config (`what`), capped at 4 MiB.
async fn read_document(resp: reqwest::Response, what: &str) -> Result<Vec<u8>, PullErrorKind> {
    let url = resp.url().clone();
    read_capped(resp, &url, what, MAX_DOCUMENT_SIZE)
        .await
        .map_err(|e| match e {
            RegistryError::TooLarge { limit, .. } => PullErrorKind::TooLarge {
                what: what.to_string(),
                limit,
            },
            other => other.into(),
        })
}

/// GET the config blob, capped at 4 MiB and at its descriptor size, digest verified.
pub(crate) async fn fetch_config(
    client: &RegistryClient,
    repo: &str,
    scope: &str,
    config: &Descriptor,
) -> Result<Vec<u8>, PullErrorKind> {
    let what = format!("image config {}", config.digest);
    if config.size() > MAX_DOCUMENT_SIZE {
        return Err(PullErrorKind::TooLarge {
            what,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    let digest = parse_digest(&config.digest)?;
    let resp = get_blob(client, repo, scope, &digest).await?;
    let bytes = read_document(resp, &what).await?;
    if bytes.len() as u64 != config.size() {
        return Err(PullErrorKind::SizeMismatch {
            what,
            expected: config.size(),
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(PullErrorKind::DigestMismatch {
            what,
            expected: config.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

async fn get_blob(
    client: &RegistryClient,
    repo: &str,
    scope: &str,
    digest: &Digest,
) -> Result<reqwest::Response, PullErrorKind> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    match client.get(&path, None, scope).await {
        Ok(r) => Ok(r),
        Err(RegistryError::Status { status: 404, .. }) => Err(PullErrorKind::BlobUnknown {
            digest: digest.clone(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The rest of a blob from byte `from` on: only a 206 answer starting exactly there will do
/// (a 200 would repeat bytes already consumed).
async fn resume_blob(
    client: &RegistryClient,
    repo: &str,
    scope: &str,
    digest: &Digest,
    from: u64,
) -> Result<reqwest::Response, String> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = client
        .get_from(&path, None, scope, Some(from))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(format!(
            "the registry answered {} to a Range request",
            resp.status()
        ));
    }
    let range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `bytes FIRST-LAST/TOTAL`: the rest of the blob from `from`, not an empty range.
    let parsed = range.strip_prefix("bytes ").and_then(|r| {
        let (span, total) = r.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        Some((
            first.parse::<u64>().ok()?,
            last.parse::<u64>().ok()?,
            total.parse::<u64>().ok(),
        ))
    });
    match parsed {
        Some((first, last, total))
            if first == from && last >= first && total.is_none_or(|t| t > last) => {}
        _ => {
            return Err(format!(
                "Content-Range {range:?} is not the rest of the blob from {from}"
            ))
        }
    }
    Ok(resp)
}

/// One attempt at a layer: stream the blob into `Store::ingest_layer` on a blocking thread.
pub(crate) async fn fetch_layer(
    client: &RegistryClient,
    store: &Store,
    repo: &str,
    scope: &str,
    expect: &LayerExpectation,
    events: &UnboundedSender<PullEvent>,
    opts: &PullOptions,
) -> Result<(), PullErrorKind> {
    if store.has_blob(&expect.digest) {
        // The blob is here (e.g. an earlier pull was killed after storing it): unpack it.
        let store = store.clone();
        let expect = expect.clone();
        return blocking(move || store.ingest_layer_from_blob(&expect)).await;
    }
    let mut resp = get_blob(client, repo, scope, &expect.digest).await?;
    // A whole answer of another length than the descriptor's is the wrong blob, not a cut
    // connection: fail at once instead of resuming and retrying it.
    if let Some(length) = resp.content_length() {
        if length != expect.size {
            return Err(PullErrorKind::SizeMismatch {
                what: format!("layer {}", expect.digest),
                expected: expect.size,
                actual: length,
            });
        }
    }
    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(16);
    let ingest_store = store.clone();
    let ingest_expect = expect.clone();
    let ingest = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        };
        ingest_store.ingest_layer(&mut reader, &ingest_expect, &mut |_| {})
    });

    // Pump the body into the channel, never past the descriptor size. A connection cut
    // midway is resumed with a Range request where the registry allows it, so the bytes
    // already hashed and unpacked are not fetched again.
    let pumped: Result<(), PullErrorKind> = async {
        let mut received: u64 = 0;
        let mut reported: u64 = 0;
        let mut resumes: u32 = 0;
        loop {
            let cut = match resp.chunk().await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The store stopped reading; its result tells why.
                        return Ok(());
                    }
                    if received > expect.size {
                        return Err(PullErrorKind::TooLong {
                            digest: expect.digest.clone(),
                            expected: expect.size,
                        });
                    }
                    if received - reported >= PROGRESS_STEP || received == expect.size {
                        reported = received;
                        let _ = events.send(PullEvent::LayerProgress {
                            digest: expect.digest.clone(),
                            bytes_done: received,
                        });
                    }
                    continue;
                }
                Ok(None) if received >= expect.size => return Ok(()),
                Ok(None) => "the connection ended before the whole blob arrived".to_string(),
                Err(e) => {
                    // Signed CDN URLs carry tokens in their query: keep them out of messages.
                    let mut detail = crate::client::error_chain(&e);
                    if let Some(url) = e.url() {
                        detail = detail.replace(url.as_str(), &crate::client::redact(url));
                    }
                    format!("network error: {detail}")
                }
            };
            tracing::debug!(digest = %expect.digest, received, %cut, "blob stream cut");
            if received > 0 && resumes < opts.retries {
                resumes += 1;
                tokio::time::sleep(backoff(opts.retry_delay, resumes)).await;
                match resume_blob(client, repo, scope, &expect.digest, received).await {
                    Ok(rest) => {
                        tracing::info!(digest = %expect.digest, received, "resuming the blob");
                        resp = rest;
                        continue;
                    }
                    Err(why) => {
                        tracing::debug!(digest = %expect.digest, %why, "cannot resume");
                    }
                }
            }
            let _ = tx.send(Err(io::Error::other(cut))).await;
            return Err(PullErrorKind::Truncated {
                digest: expect.digest.clone(),
                received,
                expected: expect.size,
            });
        }
    }
    .await;
    drop(tx);
    let ingested = ingest
        .await
        .map_err(|e| PullErrorKind::Internal(e.to_string()))?;
    match (pumped, ingested) {
        (_, Ok(())) => Ok(()),
        // What went wrong on the wire explains the store's complaint about the stream.
        (Err(wire), Err(_)) => Err(wire),
        (Ok(()), Err(store_err)) => Err(store_err.into()),
    }
}

/// A blocking `Read` over chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
