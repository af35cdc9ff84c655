//! gcr-api: the Docker Engine API (v1.41 paths, with or without the `/v1.NN` prefix) served by
//! `gcr system service` on a unix socket or a loopback TCP port. A front end: every handler
//! calls the libraries the `gcr` command line calls (gcr-containers, gcr-storage); it holds
//! no container logic. An endpoint not implemented yet answers 501 with a message naming it.

#![deny(unsafe_code)]

mod archive;
mod build;
mod containers;
mod create_body;
mod error;
mod events;
mod exec;
mod handlers;
mod images;
mod networks;
mod stats;
mod stream;
mod system;
mod volumes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::Router;

pub use gcr_containers::engine::API_VERSION;

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("service address {0:?}: use unix:///path/to/socket or tcp://127.0.0.1:PORT")]
    BadUri(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is in use by a running service (stop it, or choose another socket)", .0.display())]
    InUse(PathBuf),
}

/// Where the service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Listen {
    /// Podman's URI forms: `unix:///run/x.sock` (or a bare absolute path) and
    /// `tcp://127.0.0.1:PORT`.
    pub fn parse(uri: &str) -> Result<Listen, ApiError> {
        if let Some(path) = uri.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Listen::Unix(PathBuf::from(path)));
            }
        } else if let Some(addr) = uri.strip_prefix("tcp://") {
            if let Ok(addr) = addr.parse() {
                return Ok(Listen::Tcp(addr));
            }
        } else if uri.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(uri)));
        }
        Err(ApiError::BadUri(uri.to_string()))
    }
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub store_root: PathBuf,
    pub listen: Listen,
    /// Stop after this long without a request (None: never), as `podman system service --time`.
    pub idle: Option<Duration>,
    /// The gcr binary, started as a worker for what forks into the runtime (see
    /// `gcr_containers::worker`).
    pub worker_exe: PathBuf,
}

/// What every handler shares.
pub(crate) struct Service {
    pub store_root: PathBuf,
    worker_exe: PathBuf,
    /// Exec instances, by ID (in memory, as Docker keeps them).
    execs: std::sync::Mutex<std::collections::HashMap<String, exec::ExecEntry>>,
    started: Instant,
    /// Milliseconds since `started` of the last request's end.
    last_activity: AtomicU64,
    in_flight: AtomicUsize,
}

impl Service {
    pub fn store(&self) -> Result<gcr_storage::Store, gcr_storage::StoreError> {
        gcr_storage::Store::open(self.store_root.clone())
    }

    /// Runs a job that starts container processes in a fresh single-threaded gcr process.
    pub fn in_worker(
        &self,
        job: &gcr_containers::worker::Job,
    ) -> Result<(), gcr_containers::ContainerError> {
        gcr_containers::worker::run_in_worker(&self.worker_exe, &self.store_root, job)
    }

    /// The command of a worker whose stdio the service relays.
    pub fn worker_command(
        &self,
        job: &gcr_containers::worker::Job,
    ) -> Result<std::process::Command, gcr_containers::ContainerError> {
        gcr_containers::worker::command(&self.worker_exe, &self.store_root, job)
    }

    pub fn execs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, exec::ExecEntry>> {
        // A poisoned map still holds valid entries (each update is one assignment).
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that an exec ended (with its exit status, when attached).
    pub fn finish_exec(&self, id: &str, code: Option<i32>) {
        if let Some(entry) = self.execs().get_mut(id) {
            entry.finish(code);
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// The routes, shared by the prefixed (`/v1.41/...`) and bare forms.
fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/_ping", get(handlers::ping).head(handlers::ping))
        .route("/version", get(handlers::version))
        .route("/info", get(handlers::info))
        .route("/containers/json", get(containers::list))
        .route("/containers/create", post(containers::create))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}/rename", post(containers::rename))
        .route("/containers/{id}/top", get(containers::top))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}/pause", post(containers::pause))
        .route("/containers/{id}/update", post(containers::update))
        .route("/containers/{id}/unpause", post(containers::unpause))
        .route("/containers/{id}", delete(containers::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route(
            "/containers/{id}/archive",
            get(archive::archive)
                .head(archive::archive)
                .put(archive::archive),
        )
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .route("/build", post(build::build))
        .route("/events", get(events::events))
        .route("/auth", post(system::auth))
        .route("/system/df", get(system::df))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/get", get(images::get))
        .route("/images/load", post(images::load))
        .route("/images/{*rest}", any(images::by_name))
}

pub(crate) fn app(service: Arc<Service>) -> Router {
    Router::new()
        .merge(routes())
        .nest("/{api_version}", routes())
        .fallback(handlers::not_implemented)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            engine_headers,
        ))
        .with_state(service)
}

/// Docker's headers on every answer (clients read the API version from any of them), and
/// the activity count the idle timeout watches.
async fn engine_headers(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    service.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut response = next.run(request).await;
    service.touch();
    service.in_flight.fetch_sub(1, Ordering::Relaxed);
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert(
        "Server",
        HeaderValue::from_static(concat!("gcr/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// A Docker-shaped error answer: the status and `{"message": ...}`.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message.into() })),
    )
        .into_response()
}

/// Binds a unix socket: a stale socket file (nobody answers on it) is replaced, one a
/// service answers on is refused. Mode 0660, as Docker's.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::Io {
            op: "create the socket's directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| ApiError::Io {
        op: "listen on",
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660)).map_err(
        |source| ApiError::Io {
            op: "set the mode of",
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(listener)
}

/// Serves until SIGINT/SIGTERM or the idle timeout; removes its socket file when done.
pub async fn serve(opts: ServiceOptions) -> Result<(), ApiError> {
    let service = Arc::new(Service {
        store_root: opts.store_root.clone(),
        worker_exe: opts.worker_exe.clone(),
        execs: Default::default(),
        started: Instant::now(),
        last_activity: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let idle = opts.idle;
    let watched = service.clone();
    let stop = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let idle_timeout = async {
            match idle {
                Some(limit) => loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if watched.in_flight.load(Ordering::Relaxed) == 0 && watched.idle_for() >= limit
                    {
                        break;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = idle_timeout => tracing::info!("idle for {:?}: stopping", idle.unwrap_or_default()),
        }
    };
    let router = app(service);
    match &opts.listen {
        Listen::Unix(path) => {
            let listener = bind_unix(path)?;
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
            let _ = std::fs::remove_file(path);
            result.map_err(|source| ApiError::Io {
                op: "serve on",
                path: path.clone(),
                source,
            })
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ApiError::Io {
                    op: "listen on",
                    path: PathBuf::from(addr.to_string()),
                    source,
                })?;
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|source| ApiError::Io {
                    op: "serve on",
                    path: PathBuf::from(addr.to_string()),
                    source,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_uris() {
        assert_eq!(
            Listen::parse("unix:///run/gcr/gcr.sock").unwrap(),
            Listen::Unix("/run/gcr/gcr.sock".into())
        );
        assert_eq!(
            Listen::parse("/tmp/x.sock").unwrap(),
            Listen::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Listen::parse("tcp://127.0.0.1:2375").unwrap(),
            Listen::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        for bad in ["unix://relative", "tcp://nohost", "http://x", ""] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
    }
}
