//! Tailscale policy engine.
