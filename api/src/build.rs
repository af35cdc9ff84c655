//! `POST /build`: the body (a tar of the context, plain or compressed) goes to `gcr build -`
//! in a worker process (the builder forks for RUN steps and must not run in this
//! multi-threaded service); its output comes back as Docker's `{"stream": ...}` lines, then
//! the `aux` ID and the "Successfully built/tagged" lines, or an error line.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::error::{Answer, Failure};
use crate::{stream, Service};

/// The `gcr build` arguments for Docker's build query.
fn build_args(query: &[(String, String)]) -> Result<Vec<String>, Failure> {
    let truth = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "1" | "true");
    let json_map = |key: &str, v: &str| -> Result<BTreeMap<String, Option<String>>, Failure> {
        if v.is_empty() {
            return Ok(BTreeMap::new());
        }
        serde_json::from_str(v)
            .map_err(|e| Failure::bad_request(format!("invalid {key} {v:?}: {e}")))
    };
    let mut args = vec!["build".to_string()];
    let mut dockerfile = None;
    for (key, value) in query {
        match key.as_str() {
            "t" if !value.is_empty() => args.extend(["--tag".into(), value.clone()]),
            "dockerfile" if !value.is_empty() => dockerfile = Some(value.clone()),
            "target" if !value.is_empty() => args.extend(["--target".into(), value.clone()]),
            "nocache" if truth(value) => args.push("--no-cache".into()),
            "pull" if truth(value) || value.contains(':') => args.push("--pull".into()),
            "q" if truth(value) => args.push("--quiet".into()),
            "platform" if !value.is_empty() => args.extend(["--platform".into(), value.clone()]),
            "buildargs" => {
                for (k, v) in json_map(key, value)? {
                    // A null value takes the builder's own environment, as Docker's.
                    args.extend([
                        "--build-arg".into(),
                        v.map_or(k.clone(), |v| format!("{k}={v}")),
                    ]);
                }
            }
            // Images whose inline cache (BuildKit's) the build may use.
            "cachefrom" if !matches!(value.as_str(), "" | "[]" | "null") => {
                let images: Vec<String> = serde_json::from_str(value).map_err(|e| {
                    Failure::bad_request(format!("invalid cachefrom {value:?}: {e}"))
                })?;
                for image in images {
                    args.extend(["--cache-from".into(), image]);
                }
            }
            "labels" => {
                for (k, v) in json_map(key, value)? {
                    args.extend(["--label".into(), format!("{k}={}", v.unwrap_or_default())]);
                }
            }
            "networkmode" => match value.as_str() {
                "" | "default" | "host" => {}
                "none" => args.extend(["--network".into(), "none".into()]),
                other => {
                    return Err(Failure::not_implemented(&format!(
                        "networkmode={other} in POST /build (host or none)"
                    )))
                }
            },
            "remote" if !value.is_empty() => {
                return Err(Failure::not_implemented("remote contexts in POST /build"))
            }
            "extrahosts" | "cpusetcpus" | "cpuperiod" | "cpuquota" | "memory" | "memswap"
            | "ulimits" | "squash" | "outputs" | "session"
                if !matches!(value.as_str(), "" | "0" | "false" | "[]" | "null" | "{}") =>
            {
                return Err(Failure::not_implemented(&format!("{key} in POST /build")))
            }
            // Hints with nothing to do here: gcr keeps no intermediate containers, its
            // cache is its own, and progress is printed plain.
            _ => {}
        }
    }
    if let Some(file) = dockerfile {
        args.extend(["--file".into(), file]);
    }
    args.push("-".into());
    Ok(args)
}

fn line(value: Value) -> Bytes {
    stream::json_line(&value)
}

/// The request body in a temporary file, checked: a tar (plain or compressed) whose entries
/// all stay inside the context (400 for `..`: a context names no path outside it).
async fn receive_context(body: Body) -> Result<tempfile::NamedTempFile, Failure> {
    let keep = |e: std::io::Error| Failure::internal(format!("cannot keep the build context: {e}"));
    let file = tempfile::NamedTempFile::new().map_err(keep)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(keep)?);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| Failure::bad_request(format!("cannot read the build context: {e}")))?;
        out.write_all(&chunk).await.map_err(keep)?;
    }
    out.flush().await.map_err(keep)?;
    drop(out);
    let path = file.path().to_path_buf();
    crate::error::blocking(move || check_context(&path)).await?;
    Ok(file)
}

fn check_context(path: &std::path::Path) -> Result<(), Failure> {
    use std::io::Read as _;
    let bad = |why: String| Failure::bad_request(format!("invalid build context: {why}"));
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut head = [0u8; 8];
    let n = file.read(&mut head).map_err(|e| bad(e.to_string()))?;
    let compression = gcr_storage::compression::ArchiveCompression::sniff(&head[..n]);
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let decoded = compression.decoder(file).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(decoded);
    let mut entries = 0usize;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        entries += 1;
        let entry = entry.map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?;
        if name
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad(format!(
                "the entry {} is outside the context (`..`)",
                name.display()
            )));
        }
    }
    if entries == 0 {
        return Err(bad("the body holds no tar archive of the context".into()));
    }
    Ok(())
}

/// `POST /build`.
pub async fn build(
    State(service): State<Arc<Service>>,
    Query(query): Query<Vec<(String, String)>>,
    body: Body,
) -> Answer {
    let mut args = build_args(&query)?;
    let tags: Vec<String> = query
        .iter()
        .filter(|(k, v)| k == "t" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    let iid_file = std::env::temp_dir().join(format!(
        "gcr-build-{}.iid",
        gcr_containers::new_container_id()?
    ));
    let last = args.pop().unwrap_or_default();
    args.extend(["--iidfile".into(), iid_file.display().to_string(), last]);
    let mut command = tokio::process::Command::new(&service.worker_exe);
    command
        .arg("--root")
        .arg(&service.store_root)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The context is kept aside and checked before anything is answered, so a bad one gets
    // a proper status; the build then reads it from that file.
    let context = receive_context(body).await?;
    command.stdin(
        context
            .reopen()
            .map_err(|e| Failure::internal(format!("cannot reopen the build context: {e}")))?,
    );
    let mut child = command
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the build worker: {e}")))?;
    // The file's name goes now; the worker reads it through its open stdin.
    drop(context);
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (o, e),
        _ => return Err(Failure::internal("the build worker has no stdio")),
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    // gcr build's stdout holds its own summary (the tags, the ID), which Docker's lines
    // below replace; its progress and errors are on stderr.
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let pumps: Vec<_> = [stderr]
        .into_iter()
        .map(|pipe| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                let mut last = String::new();
                while let Ok(Some(text)) = lines.next_line().await {
                    // Docker's own "Successfully tagged" lines follow, with the names as given.
                    if text.starts_with("Successfully tagged ") {
                        continue;
                    }
                    let _ = sender
                        .send(line(json!({"stream": format!("{text}\n")})))
                        .await;
                    if !text.trim().is_empty() {
                        last = text;
                    }
                }
                last
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut last_lines = Vec::new();
        for pump in pumps {
            last_lines.push(pump.await.unwrap_or_default());
        }
        let status = child.wait().await;
        let id = std::fs::read_to_string(&iid_file).unwrap_or_default();
        let _ = std::fs::remove_file(&iid_file);
        let id = id.trim().to_string();
        if status.is_ok_and(|s| s.success()) && !id.is_empty() {
            let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
            let _ = sender.send(line(json!({"aux": {"ID": id}}))).await;
            let _ = sender
                .send(line(
                    json!({"stream": format!("Successfully built {short}\n")}),
                ))
                .await;
            for tag in tags {
                let _ = sender
                    .send(line(
                        json!({"stream": format!("Successfully tagged {tag}\n")}),
                    ))
                    .await;
            }
        } else {
            // gcr's error is its last line on stderr.
            let message = last_lines
                .last()
                .map(|l| l.trim_start_matches("error: ").to_string())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "the build failed".to_string());
            let _ = sender
                .send(line(
                    json!({"errorDetail": {"message": message}, "error": message}),
                ))
                .await;
        }
    });
    let mut response = stream::body(receiver).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn docker_build_query_becomes_gcr_build_flags() {
        let args = build_args(&query(&[
            ("t", "app:1"),
            ("t", "app:latest"),
            ("dockerfile", "sub/Dockerfile"),
            ("buildargs", r#"{"A":"1"}"#),
            ("labels", r#"{"x":"y"}"#),
            ("nocache", "1"),
            ("rm", "1"),
            ("target", "final"),
            ("cachefrom", r#"["reg.example/app:cache"]"#),
        ]))
        .unwrap();
        let text = args.join(" ");
        assert!(
            text.starts_with("build --tag app:1 --tag app:latest"),
            "{text}"
        );
        assert!(
            text.contains(
                "--build-arg A=1 --label x=y --no-cache --target final --cache-from reg.example/app:cache"
            ),
            "{text}"
        );
        assert!(text.ends_with("--file sub/Dockerfile -"), "{text}");
        assert!(build_args(&query(&[("remote", "https://x/y.git")])).is_err());
        assert!(build_args(&query(&[("buildargs", "{bad")])).is_err());
        assert!(build_args(&query(&[("cachefrom", "app:cache")])).is_err());
    }
}
