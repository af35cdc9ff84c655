//! End-to-end tests: run.

mod support;
