//! HTTP: one client for every request, the governor that paces them (request budget, pushback,
//! failover, bandwidth cap), the retry policy, its TLS (the system's roots read at the first
//! handshake), `Range`/`Content-Range` handling and redaction of secrets for logs and errors.
//!
//! The client follows redirects itself so that credentials never travel to another origin
//! (reqwest forwards custom headers such as `x-api-key` across hosts) and never sends `Referer`.

mod client;
mod error;
pub mod governor;
pub mod range;
pub mod redact;
pub mod request_id;
pub mod retry;
pub mod tls;

pub use client::{ClientConfig, HttpClient, parse_header_line};
pub use error::HttpError;
pub use governor::{Governor, GovernorConfig, Halted, TrafficSummary};
