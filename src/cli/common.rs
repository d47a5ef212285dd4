//! What the commands share: how a run ends, the global options, building the HTTP client, the
//! engine and the API client from the settings, opening the index, Ctrl-C, printing transfer
//! results and the traffic report.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::bail;
use claudedl::api::{ApiClient, ApiConfig, Pagination};
use claudedl::config::{LogFormat, Network, Settings, Traffic};
use claudedl::engine::{Engine, EngineConfig, TransferError, TransferReport, TransferStatus};
use claudedl::http::governor::Pacing;
use claudedl::http::retry::RetryPolicy;
use claudedl::http::{ClientConfig, GovernorConfig, HttpClient};
use claudedl::store::index::SqliteIndex;
use claudedl::store::layout::DataDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::args::ApiArgs;
use super::progress::Bars;

/// How a run ended, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    Success,
    Failure,
    Usage,
    Interrupted,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Interrupted => 130,
        })
    }
}

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

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
    let api = ApiClient::new(http, config).with_cancel_token(engine.cancel_token());
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
    let client = HttpClient::new(&ClientConfig {
        connect_timeout: network.connect_timeout,
        pool_per_host: network.max_connections,
        governor: governor_config(network, api)?,
        location_trusted,
        ..ClientConfig::default()
    })?;
    let engine = Engine::new(client.clone(), config);
    Ok((client, engine))
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

/// The index of an existing data directory (for commands that only read it).
pub fn open_index(data: &DataDir) -> anyhow::Result<SqliteIndex> {
    let index_path = data.index_path();
    if !index_path.exists() {
        bail!(
            "no index at {}: run `claudedl sync` first (or pass --data-dir)",
            index_path.display()
        );
    }
    Ok(SqliteIndex::open(&index_path)?)
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

/// One line (or JSON object) per transfer; the exit status of the worst.
pub fn print_results(
    results: &[Result<TransferReport, TransferError>],
    json: bool,
    bars: &Bars,
) -> ExitStatus {
    let mut status = ExitStatus::Success;
    for result in results {
        match result {
            Ok(report) => {
                if json {
                    println!("{}", report_json(report));
                } else {
                    bars.println(&report_line(report));
                }
            }
            Err(error) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"status": "failed", "error": error.to_string()})
                    );
                }
                eprintln!("error: {error}");
                status = status.max(if error.is_cancelled() {
                    ExitStatus::Interrupted
                } else {
                    ExitStatus::Failure
                });
            }
        }
    }
    status
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
