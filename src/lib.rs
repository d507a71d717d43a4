//! scim-bridge: a SCIM 2.0 service provider for Microsoft Entra ID and Okta that stages every change durably
//! and replays it into software without a SCIM endpoint of its own.
//!
//! The crate, in pipeline order (data flows one way; each module uses only those listed before it):
//! - [`scim`]: the protocol model (RFC 7643/7644) without HTTP: schemas, filters, PATCH, validation, errors;
//! - [`staging`]: SQLite (WAL, fsync per group commit): desired state, the journal (outbox) and replay's
//!   state; [`staging::journal`] is the model replay and the targets share;
//! - [`mapping`], [`matching`]: SCIM attribute paths to target fields, and the match-email rule;
//! - [`targets`]: the SQL and LDAP targets that apply journal entries downstream;
//! - [`config`]: the TOML model and its validation (data only);
//! - [`replay`]: workers that apply the journal to each target, in order per resource, with retries and
//!   dead letters;
//! - [`ops`]: systemd notification, TLS, rate limits, metrics (beside the pipeline; they read staging);
//! - [`http`]: the axum endpoint: authentication, the SCIM routes, rendering, RFC 7644 error responses;
//! - [`daemon`]: wiring of all of the above, started and stopped together.
//!
//! [`http::serve`] and [`daemon::run`] take a listener and a shutdown future, so that tests start the real
//! server on `127.0.0.1:0`.

pub mod config;
pub mod daemon;
pub mod http;
pub mod mapping;
pub mod matching;
pub mod ops;
pub mod reconcile;
pub mod replay;
pub mod scim;
pub mod staging;
pub mod targets;
