//! oidc-bff: a backend-for-frontend OpenID Connect client and token proxy for browser SPAs.
//! See SPEC (docs/) for the contract; `main.rs` is only the command line. The layers (startup →
//! routes → state → login/proxy → session → error → oidc/store → settings → leaves) are drawn in
//! docs/architecture.md and kept by tests/api/layout.rs.

// Unit tests may panic; production code may not.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod clock;
pub mod cookie_header;
pub mod doctor;
pub mod error;
pub mod events;
pub mod listener;
pub mod login;
pub mod memory;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod path_reading;
pub mod proxy;
pub mod routes;
pub mod secret;
pub mod session;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
