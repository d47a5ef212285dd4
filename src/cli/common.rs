//! What the commands share: how a run ends, the global options, building the HTTP client, the
//! engine and the API client from the settings, opening the index, Ctrl-C, printing transfer
//! results and the traffic report.

use claudedl::store::index::pg_tls::PgConfig;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use claudedl::api::{ApiClient, ApiConfig, Pagination};
use claudedl::config::{LogFormat, Network, Settings, Traffic};
use claudedl::engine::{Engine, EngineConfig, TransferError, TransferReport, TransferStatus};
use claudedl::http::governor::Pacing;
use claudedl::http::retry::RetryPolicy;
use claudedl::http::{ClientConfig, GovernorConfig, HttpClient};
use claudedl::store::index::{Index, PgIndex, SqliteIndex};
use claudedl::store::layout::DataDir;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::args::ApiArgs;
use super::progress::Bars;

pub use super::exit::{ExitStatus, UsageError};

/// Options every subcommand sees.
pub struct GlobalArgs {
    pub quiet: bool,
    /// Every setting, resolved once from the command line, the environment and the file.
    pub settings: Settings,
    /// The network settings as typed values, built once from `settings`.
    pub network: Network,
}

impl GlobalArgs {
    /// Whether progress bars may be drawn: not with `-q`, not while JSON logs take stderr, not
    /// when stderr is no terminal, and not when the command prints `json` on stdout.
    pub fn bars_visible(&self, json: bool) -> bool {
        !json && self.human_stderr() && std::io::stderr().is_terminal()
    }

    /// Whether stderr is for people: not with `-q`, nor while JSON logs take it.
    pub fn human_stderr(&self) -> bool {
        let json_logs_on_stderr =
            self.settings.log_format.value == LogFormat::Json && self.settings.log_file.is_none();
        !self.quiet && !json_logs_on_stderr
    }

    /// The data directory in effect.
    pub fn data_dir(&self) -> DataDir {
        DataDir::new(&self.settings.data_dir.value)
    }
}

/// One HTTP client (and one request budget) for the API and the engine.
pub fn connect(api: &ApiArgs, global: &GlobalArgs) -> anyhow::Result<(ApiClient, Engine)> {
    let pagination = if api.beta_pagination {
        Pagination::Beta
    } else {
        Pagination::Ga
    };
    let config = ApiConfig::from_settings(&global.settings, pagination)?;
    clients(config, &global.network)
}

/// The API client and engine for `config`, over one HTTP client built from `network`.
pub fn clients(mut config: ApiConfig, network: &Network) -> anyhow::Result<(ApiClient, Engine)> {
    config.retry = retry_policy(network);
    let (http, engine) = engine(network, Some(&config.base_url), false)?;
    // One Ctrl-C token stops transfers and API calls waiting to retry alike.
    let api = ApiClient::new(http.for_api()?, config).with_cancel_token(engine.cancel_token());
    Ok((api, engine))
}

/// The client and engine for `network`. With `api` (the Claude API's base URL) requests are API
/// traffic: paced by the API budget, failing over to the backup endpoints; without, plain URLs.
/// `location_trusted`: given headers follow redirects to other origins (`get
/// --location-trusted`).
pub fn engine(
    network: &Network,
    api: Option<&Url>,
    location_trusted: bool,
) -> anyhow::Result<(HttpClient, Engine)> {
    let config = EngineConfig {
        connections: network.connections,
        max_connections: network.max_connections,
        chunk_size: network.chunk_size,
        min_split: network.min_split,
        retry: retry_policy(network),
        read_timeout: network.read_timeout,
        checkpoint_interval: network.checkpoint_interval,
        ..EngineConfig::default()
    };
    if network.tls.insecure {
        eprintln!(
            "WARNING: --insecure: TLS certificates are NOT verified. Anyone on the network path \
             can read and change this traffic, credentials included."
        );
    }
    let client = HttpClient::new(&ClientConfig {
        connect_timeout: network.connect_timeout,
        pool_per_host: network.max_connections,
        governor: governor_config(network, api)?,
        location_trusted,
        ca_certificates: ca_certificates(network)?,
        insecure: network.tls.insecure,
        proxy: network.proxy.clone(),
        bulk_http2: network.transfer_http2,
        ..ClientConfig::default()
    })?;
    let engine = Engine::new(client.clone(), config);
    Ok((client, engine))
}

/// The certificates of `--cacert` (PEM; one or more), each checked as a root.
fn ca_certificates(network: &Network) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let Some(path) = &network.tls.cacert else {
        return Ok(Vec::new());
    };
    claudedl::tls::pem_roots(path)
        .map_err(|why| UsageError(format!("--cacert {}: {why}", path.display())).into())
}

/// How requests (the engine's and the API client's) are retried.
fn retry_policy(network: &Network) -> RetryPolicy {
    RetryPolicy {
        max_retries: network.max_retries,
        overload_cap: network.overload_pause,
        ..RetryPolicy::default()
    }
}

fn governor_config(network: &Network, api: Option<&Url>) -> anyhow::Result<GovernorConfig> {
    let (traffic, endpoints) = match api {
        Some(base_url) => {
            let mut endpoints = vec![base_url.clone()];
            endpoints.extend(network.endpoints.iter().cloned());
            (Traffic::Api, endpoints)
        }
        None if !network.endpoints.is_empty() => {
            bail!(UsageError(
                "--endpoint names backup Claude API endpoints; it applies to API commands".into()
            ))
        }
        None => (Traffic::Urls, Vec::new()),
    };
    Ok(GovernorConfig {
        pacing: network.budget(traffic).map(|budget| Pacing {
            ceiling: budget.ceiling,
            start: budget.start,
            memory: network
                .learned_rates
                .clone()
                .filter(|_| traffic == Traffic::Api),
        }),
        max_in_flight: network.max_connections,
        endpoints,
        overload_pause: network.overload_pause,
        bytes_per_second: network.bytes_per_second,
        max_concurrent_retries: (network.max_connections / 4).max(2),
    })
}

/// The fleet's database named by `--db` or `$CLAUDEDL_DB`, if any: its connection settings and
/// its name for messages (no password).
pub fn database(global: &GlobalArgs) -> anyhow::Result<Option<(PgConfig, String)>> {
    let Some(db) = &global.settings.db else {
        return Ok(None);
    };
    let config = db
        .value
        .pg_config()
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(Some((config, db.value.redacted())))
}

/// The index `ls` and `verify` read: the fleet's database when one is named, else the data
/// directory's (see [`open_index`] and [`open_index_to_write`]). A database is never migrated
/// here (`claudedl fleet init` does that).
pub fn open_any_index(
    global: &GlobalArgs,
    data: &DataDir,
    write: bool,
) -> anyhow::Result<Box<dyn Index>> {
    if let Some((config, name)) = database(global)? {
        return Ok(Box::new(PgIndex::connect_read_only(config.clone(), &name)?));
    }
    Ok(if write {
        Box::new(open_index_to_write(data)?)
    } else {
        Box::new(open_index(data)?)
    })
}

/// The index of an existing data directory, opened read-only (for commands that only read
/// it: they work on a read-only data directory or file system).
pub fn open_index(data: &DataDir) -> anyhow::Result<SqliteIndex> {
    Ok(SqliteIndex::open_read_only(&existing_index(data)?)?)
}

/// The index of an existing data directory, for writing.
pub fn open_index_to_write(data: &DataDir) -> anyhow::Result<SqliteIndex> {
    Ok(SqliteIndex::open(&existing_index(data)?)?)
}

fn existing_index(data: &DataDir) -> anyhow::Result<std::path::PathBuf> {
    let index_path = data.index_path();
    if !index_path.exists() {
        bail!(
            "no index at {}: run `claudedl sync` first (or pass --data-dir)",
            index_path.display()
        );
    }
    Ok(index_path)
}

/// Cancel `token` on Ctrl-C (transfers then stop with their state saved). Abort the handle
/// to stop watching.
pub fn cancel_on_ctrl_c(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
        }
    })
}

/// The run summary (requests, pushback, waits), on stderr and in the logs.
pub fn report_traffic(client: &HttpClient, global: &GlobalArgs) {
    let summary = client.governor().summary();
    tracing::info!(
        event = "run_summary",
        requests = summary.requests,
        throttled = summary.throttled,
        achieved_rpm = summary.achieved_rpm,
        budget_rpm = summary.budget_rpm,
        endpoint_switches = summary.endpoint_switches,
        "{summary}"
    );
    let noteworthy =
        summary.budget_rpm.is_some() || summary.throttled > 0 || !summary.server_errors.is_empty();
    if global.human_stderr() && noteworthy && summary.requests > 0 {
        eprintln!("requests: {summary}");
    }
}

/// What a transfer was: its URL (redacted) and output path, for failed ones' JSON objects.
pub struct Target {
    pub url: String,
    pub path: PathBuf,
}

impl Target {
    pub fn of(spec: &claudedl::engine::TransferSpec) -> Target {
        Target {
            url: claudedl::http::redact::redact_url(&spec.url),
            path: spec.output.clone(),
        }
    }
}

/// One line (or JSON object) per transfer (`targets` in the same order); the exit status of
/// the run (see [`ExitStatus::of_items`]).
pub fn print_results(
    results: &[Result<TransferReport, TransferError>],
    targets: &[Target],
    json: bool,
    bars: &Bars,
) -> ExitStatus {
    let failures = print_items(results, targets, json, bars);
    ExitStatus::of_items(&failures, failures.len() < results.len())
}

/// [`print_results`] of one part of a run: the statuses of its failures.
pub fn print_items(
    results: &[Result<TransferReport, TransferError>],
    targets: &[Target],
    json: bool,
    bars: &Bars,
) -> Vec<ExitStatus> {
    results
        .iter()
        .enumerate()
        .filter_map(|(i, result)| print_item(result, targets.get(i), json, bars))
        .collect()
}

/// Print how one item ended (a line, or a JSON line with `--json`); the status of a failure.
pub fn print_item(
    result: &Result<TransferReport, TransferError>,
    target: Option<&Target>,
    json: bool,
    bars: &Bars,
) -> Option<ExitStatus> {
    let error = match result {
        Ok(report) => {
            if json {
                println!("{}", report_json(report));
            } else {
                bars.println(|| report_line(report));
            }
            return None;
        }
        Err(error) => error,
    };
    let status = ExitStatus::of_transfer(error);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "url": target.map(|t| &t.url),
                "path": target.map(|t| &t.path),
                "status": "failed",
                "error": error.to_string(),
                "exit_code": status.code(),
            })
        );
    }
    eprintln!("error: {error}");
    Some(status)
}

/// The outcome of a download piped to stdout (stdout carries the content: nothing else goes
/// there, `--json` included); its exit status.
pub fn print_piped(result: Result<u64, TransferError>, target: &Target) -> ExitStatus {
    match result {
        Ok(bytes) => {
            tracing::info!(event = "file_done", url = %target.url, bytes, "piped to stdout");
            ExitStatus::Success
        }
        Err(error) => {
            let status = ExitStatus::of_transfer(&error);
            eprintln!(
                "error: {error} (a pipe is never resumed: the reader got a prefix; run again)"
            );
            status
        }
    }
}

/// `path` as a local path: an output URL with a scheme (`s3://…`) is refused, not written
/// as a directory named `s3:`.
pub fn local_path(path: &std::path::Path) -> Result<(), UsageError> {
    let text = path.to_string_lossy();
    let Some((scheme, _)) = text.split_once("://") else {
        return Ok(());
    };
    let is_scheme = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    if !is_scheme {
        return Ok(());
    }
    Err(UsageError(format!(
        "{text}: claudedl writes local files only, not {scheme}:// URLs; download to a file \
         and upload it, or pipe it: `-o - | <uploader> - {text}`"
    )))
}

fn report_json(report: &TransferReport) -> serde_json::Value {
    serde_json::json!({
        "url": report.url,
        "path": report.path,
        "status": match report.status {
            TransferStatus::Downloaded => "downloaded",
            TransferStatus::AlreadyPresent => "exists",
        },
        "size": report.size,
        "bytes": report.fetched,
        "resumed_from": report.resumed_from,
        "sha256": report.sha256,
        "encrypted": report.encrypted,
        "duration_ms": report.duration.as_millis() as u64,
        "retries": report.retries,
    })
}

fn report_line(report: &TransferReport) -> String {
    let path = report.path.display();
    match report.status {
        TransferStatus::AlreadyPresent => {
            format!("{path}: exists, left alone (use --force to replace)")
        }
        TransferStatus::Downloaded => format!(
            "{path}: {} in {:.1?}, sha256 {}",
            bytesize::ByteSize(report.size).display().iec(),
            report.duration,
            report.sha256.as_deref().unwrap_or("-"),
        ),
    }
}
