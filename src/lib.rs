//! claudedl: a fast, resumable, polite downloader for the Claude API and any HTTP(S) URL.
//!
//! # Layout
//! - [`engine`]: the transfer engine (plan, stream, ledger, transfer, batch). Never prints;
//!   reports through [`engine::Reporter`].
//! - [`http`]: the one HTTP client, the retry policy, Range parsing and secret redaction.
//! - [`store`]: atomic writes, the `.part` file, byte-range sets and resume state.
//! - [`sync`]: mirror an account into the data directory, recorded in the index.
//! - [`verify`]: re-hash the data directory against the index (encrypted files through their
//!   plaintext); find orphans.
//! - [`config`]: the config file and the layering of settings with their sources.
//! - [`crypt`]: encryption at rest in the age format (sealing chunks out of order, resume
//!   keys, decryption).
//! - [`cli`]: argument parsing, progress display and the subcommands; the binary's
//!   `main` only calls [`cli::main`].

pub mod api;
pub mod cli;
pub mod config;
pub mod crypt;
pub mod engine;
pub mod http;
pub mod store;
pub mod sync;
pub mod verify;
