//! Integration tests of the policy engine: conformance with Tailscale's control plane, and
//! the questions, test runner and validation on a realistic policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod conformance;
mod fidelity;
mod queries;
mod validation;
