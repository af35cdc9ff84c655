//! End-to-end tests: check.

mod support;
