//! Tests of push's upload locations, error kinds and scopes.

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
    let status = RegistryError::bare_status;
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
