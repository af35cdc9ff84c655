//! Tests of pull's error kinds and its blob reader.

use super::*;
use crate::retry::Retryable as _;

#[test]
fn transient_kinds() {
    assert!(PullErrorKind::Truncated {
        digest: Digest::of(b""),
        received: 1,
        expected: 2
    }
    .is_transient());
    assert!(!PullErrorKind::TooLong {
        digest: Digest::of(b""),
        expected: 2
    }
    .is_transient());
    assert!(!PullErrorKind::DigestMismatch {
        what: "x".into(),
        expected: "y".into(),
        actual: Digest::of(b"")
    }
    .is_transient());
    assert!(!PullErrorKind::ManifestUnknown {
        registry: "r".into(),
        repository: "x".into(),
        tag: "t".into()
    }
    .is_transient());
    assert!(PullErrorKind::Registry(RegistryError::bare_status(502)).is_transient());
}

#[test]
fn channel_reader_delivers_bytes_and_errors() {
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(Ok(bytes::Bytes::from_static(b"hello ")))
        .unwrap();
    tx.try_send(Ok(bytes::Bytes::from_static(b"world")))
        .unwrap();
    tx.try_send(Err(io::Error::other("cut"))).unwrap();
    drop(tx);
    let mut r = ChannelReader {
        rx,
        current: bytes::Bytes::new(),
    };
    let mut out = Vec::new();
    let e = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(out, b"hello world");
    assert_eq!(e.to_string(), "cut");
}
