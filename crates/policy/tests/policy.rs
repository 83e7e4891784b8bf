//! Integration tests of the policy engine: conformance with Tailscale's control plane, and
//! the queries and test runner on realistic policies.

mod conformance;
