//! Every default in one table: the values [`super::resolve`] falls back on, and the rules that
//! apply when a key without a single default value is unset (what `config show` prints).

/// A mebibyte.
const MIB: u64 = 1024 * 1024;

/// The public Claude API.
pub const BASE_URL: &str = "https://api.anthropic.com";
/// Seconds to wait for a connection.
pub const CONNECT_TIMEOUT: f64 = 30.0;
/// Seconds of silence tolerated while reading a body.
pub const READ_TIMEOUT: f64 = 60.0;
/// Retries per request after the first failure.
pub const MAX_RETRIES: u32 = 5;
/// Parallel connections per file.
pub const CONNECTIONS: u16 = 8;
/// Connections across all files, when unset: the larger of this and `connections`.
pub const MIN_MAX_CONNECTIONS: u16 = 16;
/// Files downloaded at once (`get -j`, `sync -j`): as many as there are pooled connections,
/// so that each small file in flight has a kept-alive connection of its own (measured in
/// docs/benchmarks-small.md: fewer leave the connections idle between small files).
pub const FILES_AT_ONCE: u16 = MIN_MAX_CONNECTIONS;
/// Where API traffic's request budget starts when no ceiling is set and nothing was learned:
/// the lowest tier (it then follows the server's advertised limit, or discovers it).
pub const API_RPM: u32 = 50;
/// Seconds an overloaded endpoint is left alone.
pub const OVERLOAD_PAUSE: f64 = 600.0;
/// The data directory.
pub const DATA_DIR: &str = "data";
/// The largest byte range one request asks for.
pub const CHUNK_SIZE: u64 = 64 * MIB;
/// Ranges smaller than twice this are not split further.
pub const MIN_SPLIT: u64 = MIB;
/// Milliseconds between checkpoints of the resume state.
pub const CHECKPOINT_MS: u64 = 100;
/// Bulk transfers over HTTP/1.1 (one TCP connection per range): measured faster than HTTP/2
/// for parallel ranges (see the README); API calls use HTTP/2 when a TLS server offers it.
pub const TRANSFER_HTTP: super::TransferHttp = super::TransferHttp::Http11;

/// What applies when `section.key` is unset, for the keys whose default is a rule rather than
/// one of the values above.
pub fn rule(section: &str, key: &str) -> Option<String> {
    Some(match (section, key) {
        ("auth", "api_key" | "api_key_env") => "not set".to_owned(),
        ("network", "preset") => "none".to_owned(),
        ("network", "max_connections") => {
            format!("the larger of connections and {MIN_MAX_CONNECTIONS}")
        }
        ("network", "requests_per_minute") => {
            format!(
                "no ceiling: API commands start at {API_RPM}/min (or a learned rate) and follow \
                 the server; get is unpaced"
            )
        }
        ("network", "limit_rate") => "unlimited".to_owned(),
        ("network", "cacert") => "the system's trusted roots only".to_owned(),
        ("network", "proxy") => "none".to_owned(),
        ("auth", "auth_token") => "not set".to_owned(),
        ("crypt", "recipients_file") => "none".to_owned(),
        ("log", "file") => "stderr".to_owned(),
        ("fleet", "db") => "none: the index is SQLite in the data directory".to_owned(),
        ("log", "level") => {
            "warn on stderr, info for JSON or a file; $CLAUDEDL_LOG overrides".to_owned()
        }
        _ => return None,
    })
}
