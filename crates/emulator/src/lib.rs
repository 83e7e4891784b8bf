//! A faithful emulator of the Tailscale API v2.
