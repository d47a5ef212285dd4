//! Integration tests: one binary, real servers on loopback.
//!
//! - `nginx`: a real nginx started per test (real Range, If-Range and ETag semantics).
//! - `faults`: the in-repo fault origin, one named fault per test, exact request counts.
//! - `cli`: the `claudedl` binary as a user runs it: exit codes, JSON, kill -9 and resume.
//! - `api`: the Claude API commands and `sync` against the bundled mock API.
//! - `budget`: request counts under a budget, splitting worth its requests, learned rates.
//! - `fleet`: `claudedl worker` processes on one PostgreSQL queue: kills, drains, enqueue.
//! - `segments`: one large file in segments over several workers, one of them killed.
//! - `governor`: the request budget, 429/529 pushback, failover and the bandwidth cap.
//! - `verify`: `claudedl verify` after a sync into a data directory damaged by hand.
//! - `config`: the config file, the environment and flags, through `config show` and `sync`.
//! - `logs`: JSON log lines, `file_done` events, `--log-file`.
//! - `crypt`: encryption at rest, checked with the real `age` CLI and plaintext scans.
//! - `habits`: pipes, exit codes by kind of failure, selection flags, dry runs, completions,
//!   `ANTHROPIC_AUTH_TOKEN`, custom CAs and certificate errors, HTTP/2 (issue 13).
//! - `layout`: the architecture on the sources (import directions, no cycle in `src/cli`).
//! - `index`: one index suite on both backends (SQLite, PostgreSQL on a throwaway cluster).
//! - `listing`: looping page cursors end `sync`, `files ls` and `batches ls` with a clear error.
//! - `redirects`: `-H` headers stay with their origin unless `--location-trusted`.
//! - `safety`: finished work survives kills; no writes through links, no shared files, no
//!   two writers of one `.part`, no malformed entry stopping a sync, read-only reads.
//! - `small`: small files in group commits: one request each, nothing but whole files under
//!   final names after kills, a consistent index (issue 12).

mod api;
mod budget;
mod cli;
mod config;
mod crypt;
mod faults;
mod fleet;
mod governor;
mod habits;
mod index;
mod layout;
mod listing;
mod logs;
mod nginx;
mod redirects;
mod safety;
mod segments;
mod small;
mod support;
mod verify;
