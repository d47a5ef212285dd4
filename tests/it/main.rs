//! Integration tests: one binary, real servers on loopback.
//!
//! - `nginx`: a real nginx started per test (real Range, If-Range and ETag semantics).
//! - `faults`: the in-repo fault origin, one named fault per test, exact request counts.
//! - `cli`: the `claudedl` binary as a user runs it: exit codes, JSON, kill -9 and resume.
//! - `api`: the Claude API commands and `sync` against the bundled mock API.
//! - `budget`: request counts under a budget, splitting worth its requests, learned rates.
//! - `governor`: the request budget, 429/529 pushback, failover and the bandwidth cap.
//! - `verify`: `claudedl verify` after a sync into a data directory damaged by hand.
//! - `config`: the config file, the environment and flags, through `config show` and `sync`.
//! - `logs`: JSON log lines, `file_done` events, `--log-file`.
//! - `crypt`: encryption at rest, checked with the real `age` CLI and plaintext scans.
//! - `layout`: the architecture on the sources (import directions, no cycle in `src/cli`).

mod api;
mod budget;
mod cli;
mod config;
mod crypt;
mod faults;
mod governor;
mod layout;
mod logs;
mod nginx;
mod support;
mod verify;
