//! End-to-end tests: pull.

mod support;
