//! The network settings in effect, in the units the engine, the HTTP client, the governor and
//! the API client take: built once from [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{Settings, Source, defaults};

/// Whose requests these are: the Claude API's (paced by the budget, with failover) or plain
/// URLs' (unpaced unless `--rpm` is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Api,
    Urls,
}

/// Typed network values. Every field comes from a [`Settings`] value (whose source
/// `config show` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Parallel ranges per file.
    pub connections: usize,
    /// Connections across all files of the process.
    pub max_connections: usize,
    pub chunk_size: u64,
    pub min_split: u64,
    pub max_retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub checkpoint_interval: Duration,
    pub overload_pause: Duration,
    /// Cap on bytes per second across all connections.
    pub bytes_per_second: Option<u64>,
    /// Backup API endpoints, in order.
    pub endpoints: Vec<Url>,
    /// The ceiling of API traffic's request budget: `--rpm`, `$CLAUDEDL_RPM` or the file.
    pub api_rpm: Option<u32>,
    /// The request budget of plain URLs: `--rpm` only (a configured budget is the API's).
    pub urls_rpm: Option<u32>,
    /// Where request rates discovered from the server are remembered.
    pub learned_rates: Option<PathBuf>,
    pub tls: Tls,
    /// Proxy URL for every request.
    pub proxy: Option<Url>,
    /// Bulk transfers may use HTTP/2.
    pub transfer_http2: bool,
}

/// Which certificates are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// A PEM file of CA certificates trusted besides the system's.
    pub cacert: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
}

/// How a kind of traffic is paced: unpaced (`None`), or a budget that starts at `start`
/// (requests/minute) and never exceeds `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub ceiling: Option<u32>,
    pub start: u32,
}

impl Network {
    /// The budget for `traffic`: decided here, once. API traffic is always paced: from the
    /// user's ceiling, else (unless a rate was learned) from the default start, growing to
    /// what the server advertises or accepts. Plain URLs are paced only by `--rpm`.
    pub fn budget(&self, traffic: Traffic) -> Option<Budget> {
        match traffic {
            Traffic::Api => Some(Budget {
                ceiling: self.api_rpm,
                start: self.api_rpm.unwrap_or(defaults::API_RPM),
            }),
            Traffic::Urls => self.urls_rpm.map(|rpm| Budget {
                ceiling: Some(rpm),
                start: rpm,
            }),
        }
    }
}

impl Settings {
    /// The network values in effect.
    pub fn network(&self) -> Network {
        let rpm = self.requests_per_minute.as_ref();
        Network {
            connections: self.connections.value.into(),
            max_connections: self.max_connections.value.into(),
            chunk_size: self.chunk_size.value.as_u64().max(1),
            min_split: self.min_split.value.as_u64().max(1),
            max_retries: self.max_retries.value,
            connect_timeout: seconds(self.connect_timeout.value),
            read_timeout: seconds(self.read_timeout.value),
            checkpoint_interval: Duration::from_millis(self.checkpoint_ms.value.max(1)),
            overload_pause: seconds(self.overload_pause.value),
            bytes_per_second: self.limit_rate.as_ref().map(|r| r.value.as_u64().max(1)),
            // Checked when read (the file's schema, the flag's parser).
            endpoints: (self.endpoints.value.iter())
                .filter_map(|text| Url::parse(text).ok())
                .collect(),
            api_rpm: rpm.map(|s| s.value),
            urls_rpm: rpm
                .filter(|s| matches!(s.source, Source::Cli(_)))
                .map(|s| s.value),
            learned_rates: self.learned_rates.clone(),
            tls: Tls {
                cacert: self.cacert.as_ref().map(|c| c.value.clone()),
                insecure: self.insecure.value,
            },
            // Checked when read.
            proxy: self.proxy.as_ref().and_then(|p| Url::parse(&p.value).ok()),
            transfer_http2: self.transfer_http.value == super::TransferHttp::Auto,
        }
    }
}

/// A duration of `secs` seconds (positive and finite, checked when read; a value too large
/// for a [`Duration`] is forever).
pub fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// `text` as an http(s) URL with a host (a backup endpoint, a base URL in the file).
pub fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{text:?} must be an http(s) URL with a host"));
    }
    Ok(url)
}

/// `text` as a proxy URL: http, https, socks5 or socks5h, with a host.
pub fn proxy_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") || url.host().is_none() {
        return Err(format!(
            "{text:?}: a proxy is http://, https://, socks5:// or socks5h:// with a host"
        ));
    }
    Ok(url)
}

/// Whether `secs` is a usable number of seconds (positive, finite).
pub fn valid_seconds(secs: f64) -> bool {
    secs.is_finite() && secs > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layer, resolve};

    #[test]
    fn the_budget_of_plain_urls_is_the_flag_only() {
        let flag = Layer {
            requests_per_minute: Some(600),
            ..Layer::default()
        };
        let env = |name: &str| (name == super::super::RPM_VAR).then(|| "120".to_owned());
        let network = resolve(&Layer::default(), env, None).network();
        let ceiling = |rpm| Budget {
            ceiling: Some(rpm),
            start: rpm,
        };
        assert_eq!(network.budget(Traffic::Api), Some(ceiling(120)));
        assert_eq!(network.budget(Traffic::Urls), None);
        let network = resolve(&flag, |_| None, None).network();
        assert_eq!(network.budget(Traffic::Urls), Some(ceiling(600)));
        let network = resolve(&Layer::default(), |_| None, None).network();
        let default = Budget {
            ceiling: None,
            start: defaults::API_RPM,
        };
        assert_eq!(network.budget(Traffic::Api), Some(default));
    }

    #[test]
    fn learned_rates_live_in_the_state_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                let found = pairs.iter().find(|(n, _)| *n == name);
                found.map(|(_, v)| (*v).to_owned())
            }
        };
        let learned = |pairs| resolve(&Layer::default(), env(pairs), None).learned_rates;
        assert_eq!(learned(&[]), None);
        assert_eq!(
            learned(&[("HOME", "/home/u")]),
            Some(PathBuf::from("/home/u/.local/state/claudedl/rates.json"))
        );
        assert_eq!(
            learned(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/s")]),
            Some(PathBuf::from("/s/claudedl/rates.json"))
        );
        assert_eq!(
            learned(&[("XDG_STATE_HOME", "/s"), ("CLAUDEDL_RATES", "/r.json")]),
            Some(PathBuf::from("/r.json"))
        );
    }

    #[test]
    fn unset_max_connections_follow_connections() {
        let cli = Layer {
            connections: Some(40),
            ..Layer::default()
        };
        assert_eq!(resolve(&cli, |_| None, None).network().max_connections, 40);
        let network = resolve(&Layer::default(), |_| None, None).network();
        assert_eq!(network.max_connections, 16);
        assert_eq!(network.connect_timeout, Duration::from_secs(30));
        assert_eq!(network.checkpoint_interval, Duration::from_millis(100));
    }
}
