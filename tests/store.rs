//! End-to-end tests: store.

mod support;
