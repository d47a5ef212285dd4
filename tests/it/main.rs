//! Integration tests: one binary, real servers on loopback.
//!
//! - `nginx`: a real nginx started per test (real Range, If-Range and ETag semantics).
//! - `faults`: the in-repo fault origin, one named fault per test, exact request counts.
//! - `cli`: the `claudedl` binary as a user runs it: exit codes, JSON, kill -9 and resume.
//! - `api`: the Claude API commands and `sync` against the bundled mock API.
//! - `governor`: the request budget, 429/529 pushback, failover and the bandwidth cap.
//! - `verify`: `claudedl verify` after a sync into a data directory damaged by hand.

mod api;
mod cli;
mod faults;
mod governor;
mod nginx;
mod support;
mod verify;
