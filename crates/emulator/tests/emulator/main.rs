//! The emulator's integration tests: one binary, over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod api;
mod coverage;
mod garbage;
mod openapi;
mod python;
mod support;
mod webhooks;
