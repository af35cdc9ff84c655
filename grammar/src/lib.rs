//! gcr-grammar
