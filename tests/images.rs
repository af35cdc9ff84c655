//! End-to-end tests: images.

mod support;
