//! Network settings: [`NetworkArgs`] with their defaults, turned into the process's one HTTP
//! client (with its governor) and the engine's configuration.

use std::time::Duration;

use anyhow::bail;
use url::Url;

use super::args::NetworkArgs;
use super::{GlobalArgs, UsageError};
use crate::config::defaults;
use crate::engine::{Engine, EngineConfig};
use crate::http::retry::RetryPolicy;
use crate::http::{ClientConfig, GovernorConfig, HttpClient};

/// The request budget of API commands when none is given: the lowest tier.
pub const DEFAULT_API_RPM: u32 = 50;
const MIN_MAX_CONNECTIONS: usize = 16;

/// Whose requests these are: the Claude API's (paced by default, with failover) or plain
/// URLs' (unpaced unless `--rpm` is given).
#[derive(Debug, Clone)]
pub enum Traffic {
    Api { base_url: Url },
    Urls,
}

/// The client and engine for `network` and `traffic`; `location_trusted`: given headers follow
/// redirects to other origins (`get --location-trusted`).
pub fn engine(
    network: &NetworkArgs,
    traffic: &Traffic,
    location_trusted: bool,
) -> anyhow::Result<(HttpClient, Engine)> {
    let config = engine_config(network)?;
    let client = HttpClient::new(&ClientConfig {
        connect_timeout: seconds(
            network.connect_timeout,
            defaults::CONNECT_TIMEOUT,
            "--connect-timeout",
        )?,
        pool_per_host: config.max_connections,
        governor: governor_config(network, traffic, config.max_connections)?,
        location_trusted,
        ..ClientConfig::default()
    })?;
    let engine = Engine::new(client.clone(), config);
    Ok((client, engine))
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

fn engine_config(network: &NetworkArgs) -> anyhow::Result<EngineConfig> {
    let defaults = EngineConfig::default();
    let connections = usize::from(network.connections.unwrap_or(defaults::CONNECTIONS));
    let max_connections = network
        .max_connections
        .map_or(connections.max(MIN_MAX_CONNECTIONS), usize::from);
    let size = |value: Option<bytesize::ByteSize>, default: u64| {
        value.map_or(default, |v| v.as_u64()).max(1)
    };
    Ok(EngineConfig {
        connections,
        max_connections,
        chunk_size: size(network.chunk_size, defaults.chunk_size),
        min_split: size(network.min_split_size, defaults.min_split),
        retry: retry_policy(network)?,
        read_timeout: seconds(
            network.read_timeout,
            defaults::READ_TIMEOUT,
            "--read-timeout",
        )?,
        checkpoint_interval: Duration::from_millis(network.checkpoint_ms.unwrap_or(100).max(1)),
        ..defaults
    })
}

/// How requests (the engine's and the API client's) are retried.
pub fn retry_policy(network: &NetworkArgs) -> anyhow::Result<RetryPolicy> {
    let defaults = RetryPolicy::default();
    Ok(RetryPolicy {
        max_retries: network.max_retries.unwrap_or(defaults.max_retries),
        overload_cap: overload_pause(network)?,
        ..defaults
    })
}

fn governor_config(
    network: &NetworkArgs,
    traffic: &Traffic,
    max_connections: usize,
) -> anyhow::Result<GovernorConfig> {
    let (requests_per_minute, endpoints) = match traffic {
        Traffic::Api { base_url } => {
            let mut endpoints = vec![base_url.clone()];
            for text in &network.endpoints {
                endpoints.push(endpoint_url(text)?);
            }
            let rpm = network.requests_per_minute.unwrap_or(DEFAULT_API_RPM);
            (Some(rpm), endpoints)
        }
        Traffic::Urls if !network.endpoints.is_empty() => {
            bail!(UsageError(
                "--endpoint names backup Claude API endpoints; it applies to API commands".into()
            ))
        }
        Traffic::Urls => (network.requests_per_minute, Vec::new()),
    };
    Ok(GovernorConfig {
        requests_per_minute,
        max_in_flight: max_connections,
        endpoints,
        overload_pause: overload_pause(network)?,
        bytes_per_second: network.limit_rate.map(|rate| rate.as_u64().max(1)),
        max_concurrent_retries: (max_connections / 4).max(2),
    })
}

fn endpoint_url(text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text)
        .map_err(|e| UsageError(format!("--endpoint {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!(UsageError(format!(
            "--endpoint {text:?} must be an http(s) URL with a host"
        )));
    }
    Ok(url)
}

fn overload_pause(network: &NetworkArgs) -> anyhow::Result<Duration> {
    let default = defaults::OVERLOAD_PAUSE;
    seconds(network.overload_pause, default, "--overload-pause")
}

fn seconds(value: Option<f64>, default: f64, flag: &str) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| UsageError(format!("{flag} must be a positive number of seconds")).into())
}
