//! Streams out of blocking library calls: Docker's multiplexed framing (8-byte headers: the
//! stream, three zero bytes, the length big-endian), the raw form a tty container uses, JSON
//! lines (progress), and the hijacked connection of attach (`Upgrade: tcp`, 101).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use gcr_containers::logfile::{LogRecord, OutputStream};
use gcr_containers::ContainerError;

/// What a multiplexed stream's header calls each stream.
fn stream_byte(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 1,
        OutputStream::Stderr => 2,
    }
}

/// One frame of Docker's multiplexed stream.
pub fn frame(stream: OutputStream, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(&[stream_byte(stream), 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// How log records are written to the client.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// A tty container's stream is raw: one stream, no headers.
    pub tty: bool,
    /// Each line starts with its RFC 3339 time (`timestamps=1`).
    pub timestamps: bool,
}

/// The error a sink reports when the client went away (the library call then ends).
fn client_gone() -> ContainerError {
    ContainerError::Io {
        action: "write to",
        path: "the API client".into(),
        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    }
}

/// A sink for the library's log readers that sends framed records down `sender`.
pub fn record_sink(
    sender: mpsc::Sender<Bytes>,
    framing: Framing,
) -> impl FnMut(&LogRecord) -> gcr_containers::Result<()> {
    let mut at_line_start = [true, true];
    move |record| {
        let index = usize::from(record.stream == OutputStream::Stderr);
        let mut data = Vec::with_capacity(record.data.len() + 32);
        if framing.timestamps && at_line_start[index] && !record.time.is_empty() {
            data.extend_from_slice(record.time.as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(&record.data);
        at_line_start[index] = record.data.ends_with(b"\n");
        let bytes = if framing.tty {
            data
        } else {
            frame(record.stream, &data)
        };
        sender
            .blocking_send(Bytes::from(bytes))
            .map_err(|_| client_gone())
    }
}

/// A `tick` for the library's followers that ends them once the client went away.
pub fn until_closed(sender: &mpsc::Sender<Bytes>) -> impl FnMut() -> gcr_containers::Result<()> {
    let sender = sender.clone();
    move || {
        if sender.is_closed() {
            Err(client_gone())
        } else {
            Ok(())
        }
    }
}

/// A streamed response body fed by `receiver`.
pub fn body(receiver: mpsc::Receiver<Bytes>) -> Body {
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    Body::from_stream(chunks)
}

/// The content type of an attach or logs stream. API 1.41 names both forms raw-stream (the
/// client knows from the container's Tty whether frames come); multiplexed-stream is 1.42's.
pub fn content_type(_tty: bool) -> &'static str {
    "application/vnd.docker.raw-stream"
}

/// Where a hijacked connection's input goes: a process's stdin, held open after the client's
/// end of input until `hold_until` fires (a FIFO loses what it holds when its last writer
/// closes before the reader came).
pub struct StdinSink {
    pub writer: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    pub hold_until: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Answers a request for a stream of the output: when the client asked to upgrade the
/// connection (`Upgrade: tcp`, as the docker CLI's attach and exec), a 101 and the raw
/// connection carry `receiver`'s bytes (and what the client sends goes to `stdin`);
/// otherwise a 200 with a streamed body.
pub fn hijack_or_stream(
    mut request: Request,
    receiver: mpsc::Receiver<Bytes>,
    tty: bool,
    stdin: Option<StdinSink>,
) -> Response {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    if !wants_upgrade {
        let mut response = body(receiver).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(tty)),
        );
        return response;
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let connection = hyper_util::rt::TokioIo::new(upgraded);
        let (mut from_client, mut to_client) = tokio::io::split(connection);
        if let Some(StdinSink {
            mut writer,
            hold_until,
        }) = stdin
        {
            // What the client types goes to the process; its end of input closes it (once
            // the process is there to read what came before).
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut writer).await;
                let _ = writer.flush().await;
                if let Some(started) = hold_until {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), started).await;
                }
                let _ = writer.shutdown().await;
            });
        }
        let mut receiver = receiver;
        while let Some(chunk) = receiver.recv().await {
            if to_client.write_all(&chunk).await.is_err() {
                return;
            }
            let _ = to_client.flush().await;
        }
        let _ = to_client.shutdown().await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(tty)),
    );
    response
}

/// JSON lines (Docker's progress streams): each value on its own line.
pub fn json_line(value: &serde_json::Value) -> Bytes {
    let mut text = value.to_string();
    text.push_str("\r\n");
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_length() {
        assert_eq!(
            frame(OutputStream::Stderr, b"hi\n"),
            [2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']
        );
        assert_eq!(frame(OutputStream::Stdout, b"")[0], 1);
    }
}
