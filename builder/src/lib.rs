//! gcr-builder
