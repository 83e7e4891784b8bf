//! Integration tests of the policy engine: conformance with Tailscale's control plane, and
//! the questions, test runner and validation on a realistic policy.

mod conformance;
mod queries;
