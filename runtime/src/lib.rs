//! gcr-runtime
