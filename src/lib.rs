//! claudedl: a fast, resumable, polite downloader for the Claude API and any HTTP(S) URL.
//!
//! The `claudedl` binary is one user of this library; its command line is not part of it.
//! The default `demo` feature only builds the bundled mock API into that binary: a library
//! user can leave it out (`default-features = false`).
//!
//! # Layout
//! - [`config`]: the config file, the environment and the layering of settings (each value
//!   with its source), every default in one table, and the typed network values the rest is
//!   built from.
//! - [`engine`]: the transfer engine (plan, stream, ledger, transfer, batch). Never prints;
//!   reports through [`engine::Reporter`].
//! - [`http`]: the one HTTP client, its governor (request budget, pushback, failover,
//!   bandwidth cap), the retry policy, Range parsing and secret redaction.
//! - [`api`]: typed Claude endpoints (Files, Message Batches).
//! - [`store`]: atomic writes, the `.part` file, byte-range sets, resume state, the data
//!   directory and its index.
//! - [`sync`]: mirror an account into the data directory, recorded in the index.
//! - [`verify`]: re-hash the data directory against the index (encrypted files through their
//!   plaintext); find orphans.
//! - [`crypt`]: encryption at rest in the age format (sealing chunks out of order, resume
//!   keys, decryption).
//! - [`tls`]: what the HTTP clients' and the database's TLS share (the crypto provider, PEM
//!   certificates).
//!
//! # Example
//!
//! Download one URL with the default settings (8 ranges in parallel, resumable):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use claudedl::engine::{Engine, EngineConfig, Silent, TransferSpec};
//! use claudedl::http::{ClientConfig, HttpClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = HttpClient::new(&ClientConfig::default())?;
//! let engine = Engine::new(client, EngineConfig::default());
//! let url = url::Url::parse("https://example.com/big.iso")?;
//! let spec = TransferSpec::new(url, "big.iso");
//! let report = engine.download(0, &spec, Arc::new(Silent)).await?;
//! println!("{} bytes, sha256 {:?}", report.size, report.sha256);
//! # Ok(())
//! # }
//! ```

// The library never prints: it reports through events, return values and `tracing`.
#![cfg_attr(not(test), warn(clippy::print_stdout, clippy::print_stderr))]

pub mod api;
pub mod config;
pub mod crypt;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod store;
pub mod sync;
pub mod tls;
pub mod verify;

/// The cores this process may run on (1 when the system cannot say): what a batch's lanes,
/// the check of a URL list and `verify` each spread their work over.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
