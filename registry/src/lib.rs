//! gcr-registry
