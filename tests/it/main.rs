//! Integration tests: one binary, real servers on loopback.
//!
//! - `nginx`: a real nginx started per test (real Range, If-Range and ETag semantics).
//! - `faults`: the in-repo fault origin, one named fault per test, exact request counts.
//! - `cli`: the `claudedl` binary as a user runs it: exit codes, JSON, kill -9 and resume.
//! - `crypt`: encryption at rest, checked with the real `age` CLI and plaintext scans.

mod api;
mod cli;
mod crypt;
mod faults;
mod nginx;
mod support;
