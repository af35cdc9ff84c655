//! The store handle: layout, blobs, unpacked layers, locks, container records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::tmp::{self, FileLock, TmpDir};

/// Content of the `oci-layout` file.
const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
/// An empty OCI index.
const EMPTY_INDEX: &str =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

/// A handle on one store root. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
}

/// The exclusive store lock (flock on `ROOT/lock`), released on drop. Held for every
/// read-modify-write of `index.json` and for garbage collection.
pub struct StoreLock {
    _lock: FileLock,
}

/// A shared lease (flock on `ROOT/gc.lock`), released on drop. A pull or build holds one from
/// before its first ingest until after `commit_image`, so garbage collection running at the same
/// time does not delete the layers and blobs it has stored but not yet named.
pub struct Lease {
    _lock: FileLock,
}

/// What `meta.json` in an unpacked layer records. Written last inside the temporary layer
/// directory, so a layer directory without it is incomplete.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LayerMeta {
    pub diff_id: Digest,
    /// Bytes of file content in the unpacked layer.
    pub size: u64,
}

impl Store {
    /// The default store root: `/var/lib/gcr` when the effective user is root, else
    /// `$XDG_DATA_HOME/gcr` (default `~/.local/share/gcr`). The cli calls this before it enters
    /// its rootless user namespace, so the real user's XDG path is used. `--root` and `GCR_ROOT`
    /// are handled by the cli.
    pub fn default_root() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/gcr");
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            let xdg = PathBuf::from(xdg);
            if xdg.is_absolute() {
                return xdg.join("gcr");
            }
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        home.join(".local/share/gcr")
    }

    /// Open (creating if needed) the store at `root`: makes the layout (`oci-layout`,
    /// `index.json`, `blobs/sha256`, `layers`, `containers`, `cache`, `tmp`) and sweeps `tmp/`
    /// entries whose owning process is gone.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root: PathBuf = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .ctx("resolving the current directory for", &root)?
                .join(&root)
        };
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .ctx("creating store root", &root)?;
        }
        for sub in ["blobs/sha256", "layers", "containers", "cache", "tmp"] {
            let dir = root.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .ctx("creating", &dir)?;
        }
        let store = Store {
            inner: Arc::new(Inner { root }),
        };
        let layout = store.root().join("oci-layout");
        if !layout.exists() {
            store.write_file_atomic(&layout, OCI_LAYOUT.as_bytes())?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.lock()?;
            if !index.exists() {
                store.write_file_atomic(&index, EMPTY_INDEX.as_bytes())?;
            }
        }
        let swept = tmp::sweep(&store.tmp_root())?;
        for path in swept {
            tracing::debug!(path = %path.display(), "removed stale temporary entry");
        }
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn tmp_root(&self) -> PathBuf {
        self.root().join("tmp")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root().join("index.json")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root().join("blobs/sha256")
    }

    pub(crate) fn layers_root(&self) -> PathBuf {
        self.root().join("layers")
    }

    pub(crate) fn containers_root(&self) -> PathBuf {
        self.root().join("containers")
    }

    /// The build cache directory (`ROOT/cache`), owned by the builder.
    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache")
    }

    /// A fresh temporary directory under `ROOT/tmp`, removed when dropped (and swept by the next
    /// `open` if this process dies). Move what you make in it into place with a rename.
    pub(crate) fn tmp_dir(&self, purpose: &str) -> Result<TmpDir, StoreError> {
        TmpDir::create(&self.tmp_root(), purpose)
    }

    /// Take the exclusive store lock (blocking).
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock {
            _lock: tmp::lock_file(&self.root().join("lock"), true)?,
        })
    }

    /// Take a shared lease that keeps garbage collection away from content this process stores
    /// but has not yet named (see [`Lease`]).
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Ok(Lease {
            _lock: tmp::lock_file(&self.root().join("gc.lock"), false)?,
        })
    }

    /// The exclusive side of the lease: `None` while some pull or build holds a lease.
    pub(crate) fn try_gc_lease(&self) -> Result<Option<FileLock>, StoreError> {
        tmp::try_lock_file(&self.root().join("gc.lock"), true)
    }

    // ---- blobs ----

    /// True when the blob is stored.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where a blob lives (whether or not it is stored).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Read a whole blob, refusing more than `max_len` bytes, and verify its digest.
    pub fn read_blob(&self, d: &Digest, max_len: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob { digest: d.clone() })
            }
            Err(e) => return Err(StoreError::io("opening", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(max_len.saturating_add(1))
            .read_to_end(&mut bytes)
            .ctx("reading", &path)?;
        if bytes.len() as u64 > max_len {
            return Err(StoreError::TooLarge {
                what: format!("blob {d}"),
                limit: max_len,
            });
        }
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                what: path.display().to_string(),
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Store `bytes` as a blob (temporary file, fsync, rename) and return its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let tmp = self.tmp_dir("blob")?;
        let tmp_file = tmp.path().join("blob");
        write_synced(&tmp_file, bytes)?;
        self.place_blob(&tmp_file, &digest)?;
        Ok(digest)
    }

    /// Rename a verified temporary file into `blobs/sha256/<hex>` and sync the directory.
    pub(crate) fn place_blob(&self, tmp_file: &Path, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        fs::rename(tmp_file, &dest).ctx("renaming blob into", &dest)?;
        sync_dir(&self.blobs_dir());
        Ok(())
    }

    // ---- layers ----

    /// True when the layer with this diff_id is completely unpacked.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        let dir = self.layer_root(diff_id);
        dir.join("meta.json").is_file() && dir.join("diff").is_dir()
    }

    /// The unpacked layer: the directory to use as an OverlayFS lower dir.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layer_root(diff_id).join("diff")
    }

    /// `layers/<hex>`: holds `diff/` and `meta.json`.
    pub(crate) fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.layers_root().join(diff_id.hex())
    }

    pub(crate) fn layer_meta(&self, diff_id: &Digest) -> Result<LayerMeta, StoreError> {
        let path = self.layer_root(diff_id).join("meta.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingLayer {
                    diff_id: diff_id.clone(),
                })
            }
            Err(e) => return Err(StoreError::io("reading", path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { path, source })
    }

    /// Unpacked size of a layer in bytes (0 when unknown).
    pub fn layer_size(&self, diff_id: &Digest) -> u64 {
        self.layer_meta(diff_id).map(|m| m.size).unwrap_or(0)
    }

    /// Move a finished temporary layer directory (holding `diff/`) into place after writing its
    /// `meta.json`. Returns false when another process placed the same layer first (then the
    /// temporary copy is left for the caller to drop).
    pub(crate) fn place_layer(
        &self,
        tmp_layer: &Path,
        meta: &LayerMeta,
    ) -> Result<bool, StoreError> {
        let meta_path = tmp_layer.join("meta.json");
        let json = serde_json::to_vec(meta).map_err(|source| StoreError::Json {
            path: meta_path.clone(),
            source,
        })?;
        write_synced(&meta_path, &json)?;
        let dest = self.layer_root(&meta.diff_id);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp_layer,
            nix::fcntl::AT_FDCWD,
            &dest,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                sync_dir(&self.layers_root());
                Ok(true)
            }
            Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
                if self.has_layer(&meta.diff_id) {
                    return Ok(false);
                }
                // An incomplete directory is in the way (left by a crash or damage): move it
                // aside for deletion and retry once.
                self.discard_path(&dest)?;
                fs::rename(tmp_layer, &dest).ctx("renaming layer into", &dest)?;
                Ok(true)
            }
            Err(e) => Err(StoreError::io(
                "renaming layer into",
                dest,
                io::Error::from(e),
            )),
        }
    }

    /// Make `path` disappear atomically (rename into tmp) and then delete it.
    pub(crate) fn discard_path(&self, path: &Path) -> Result<(), StoreError> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        let tmp = self.tmp_dir("delete")?;
        let aside = tmp.path().join("x");
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("moving aside", path, e)),
        }
        drop(tmp);
        Ok(())
    }

    // ---- container records ----

    /// The directory of a container's files (`ROOT/containers/<id>`).
    pub fn container_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        validate_container_id(id)?;
        Ok(self.containers_root().join(id))
    }

    /// Record that container `id` uses image `image` (writes `containers/<id>/image`).
    pub fn register_container(&self, id: &str, image: &Digest) -> Result<(), StoreError> {
        let dir = self.container_dir(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .ctx("creating", &dir)?;
        self.write_file_atomic(&dir.join("image"), image.as_str().as_bytes())
    }

    /// Forget container `id`: removes its whole directory. Missing is fine.
    pub fn unregister_container(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.container_dir(id)?;
        self.discard_path(&dir)
    }

    /// IDs of the containers recorded as using image `image`.
    pub fn containers_using(&self, image: &Digest) -> Result<Vec<String>, StoreError> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|(_, img)| img.as_ref() == Some(image))
            .map(|(id, _)| id)
            .collect())
    }

    /// Every container directory with the image it records (None when unreadable).
    pub(crate) fn containers(&self) -> Result<Vec<(String, Option<Digest>)>, StoreError> {
        let root = self.containers_root();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io("reading", root, e)),
        };
        for entry in entries {
            let entry = entry.ctx("reading", &root)?;
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            let image = fs::read_to_string(entry.path().join("image"))
                .ok()
                .and_then(|s| s.trim().parse::<Digest>().ok());
            out.push((id, image));
        }
        out.sort();
        Ok(out)
    }

    // ---- helpers ----

    /// Write `bytes` to `dest` through a temporary file in `ROOT/tmp`, fsync and rename.
    pub(crate) fn write_file_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.tmp_dir("file")?;
        let tmp_file = tmp.path().join("f");
        write_synced(&tmp_file, bytes)?;
        fs::rename(&tmp_file, dest).ctx("renaming into", dest)?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        Ok(())
    }
}

/// Creates the new (temporary) file a layer blob is written into: world-readable, as the blob
/// it becomes.
pub(crate) fn create_blob_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .ctx("creating", path)
}

/// Write a new file and fsync it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx("creating", path)?;
    f.write_all(bytes).ctx("writing", path)?;
    f.sync_all().ctx("syncing", path)?;
    // Blobs are world-readable inside the (0700) root so skopeo/umoci run by root can read them.
    let _ = f.set_permissions(fs::Permissions::from_mode(0o644));
    Ok(())
}

/// fsync a directory so a rename into it survives a power cut; failures only cost durability.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn validate_container_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: id.to_string(),
            reason: "a container ID is 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"
                .to_string(),
        })
    }
}
