//! A faithful emulator of the Tailscale API v2, for tests, demos and rehearsals.
//!
//! It serves the endpoints tidegate uses (policy file with ETags and `If-Match`, users,
//! devices, posture attributes, keys, OAuth client credentials, webhooks, the configuration
//! audit log) with the shapes and status codes of Tailscale's official OpenAPI description and
//! the quirks listed in the project's API reference, over a real socket. The policy is
//! validated and its tests run by the `policy` crate on every write, as the control plane does.
//!
//! Test controls live under `/emulator/` (no authentication): `GET /emulator/state`,
//! `POST /emulator/clock`, `POST|GET|DELETE /emulator/faults`, `POST /emulator/policy`,
//! `GET|DELETE /emulator/webhook-deliveries`, `POST /emulator/devices`, `POST /emulator/users`.
//!
//! State file: `{"tailnet": "example.com", "users": [...], "devices": [...], "policy": "...",
//! "apiTokens": [{"token": "tskey-api-...", "user": "<login>"}], "oauthClients": [{"id",
//! "secret": "tskey-client-...", "scopes", "tags"}], "keys": [...], "webhooks": [...]}` with
//! the API's field names; missing fields get defaults.

mod api;
mod auth;
mod clock;
mod control;
mod error;
mod http;
mod server;
mod state;
mod webhooks;

pub use auth::scope_allows;
pub use clock::EmuClock;
pub use error::{Error, Result};
pub use server::{Fault, MAX_BODY, Options, RunningEmulator, serve, start};
pub use state::{
    DEFAULT_KEY_EXPIRY_SECONDS, DEFAULT_POLICY, DeviceRecord, KeyRecord, PostureKey, PostureValue,
    State, load_state,
};
pub use webhooks::{Delivery, signature};
