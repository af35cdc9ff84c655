//! gcr-storage
