//! `claudedl-mock`: runs the fake Claude API of [`claudedl_mock::api`] until Ctrl-C.
//!
//! ```text
//! claudedl-mock [--port N] [--files N] [--content-bytes N] [--seed N] [--demo] [--no-ranges]
//!               [--content-bytes-range MIN:MAX] [--big-files N:SIZE]
//!               [--rpm N] [--rpm-burst N] [--rpm-change-after SECS:RPM]
//!               [--reset-rate F] [--503-rate F] [--529-rate F]
//!               [--rpm-silent] [--connection-rate BYTES] [--organization ID]
//! ```
//!
//! - `--content-bytes-range MIN:MAX`: each file has MIN to MAX bytes (uniform, fixed by the seed
//!   and the file's index) instead of `--content-bytes`;
//! - `--big-files N:SIZE`: N of the `--files`, spread evenly over the listing, have SIZE bytes;
//! - `--rpm N`: a token bucket of `N` requests per minute (capacity `N`, refilled continuously),
//!   with `anthropic-ratelimit-requests-*` headers and `429` + `retry-after`;
//! - `--rpm-burst N`: the bucket holds at most `N` tokens (e.g. `--rpm 600 --rpm-burst 10`);
//! - `--rpm-change-after SECS:RPM`: sets the limit to `RPM` once, `SECS` after start (and says
//!   so on stderr).
//! - `--reset-rate F`, `--503-rate F`, `--529-rate F` (fractions, e.g. `0.2`): random body resets
//!   of file content and batch results, and random `503`/`529` answers (see
//!   [`claudedl_mock::api::Chaos`]; seeded by `--seed`).
//! - `--rpm-silent`: the limit is enforced (`429` + `retry-after`) but never advertised;
//! - `--connection-rate BYTES`: each body is sent at most BYTES per second (a per-connection cap);
//! - `--organization ID`: every answer names `anthropic-organization-id: ID`.
//!
//! Prints one line, `base_url=http://127.0.0.1:PORT api_key=KEY total_bytes=N` (N: the content
//! of every generated file), once it is listening. Also
//! serves `GET /_mock/stats` and `POST /_mock/reset-stats` (no key needed; see
//! [`claudedl_mock::api::MockStats`]):
//! `{"requests":N,"by_status":{"200":n,"429":n},"by_route":{"file_content":n,..},
//! "body_bytes":{"file_content":n,..},"elapsed_secs":f,"limit":N,"capacity":N,"allowed":f}`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use claudedl_mock::api::{
    Chaos, FileSet, MockApi, MockApiConfig, ServerLimits, SizeMix, demo_config, generated_batches,
    mixed_file_len,
};

const USAGE: &str = "usage: claudedl-mock [--port N] [--files N] [--content-bytes N] [--seed N] \
                     [--content-bytes-range MIN:MAX] [--big-files N:SIZE] [--batches N:RESULTS] [--demo] [--no-ranges] [--rpm N] [--rpm-burst N] \
                     [--rpm-change-after SECS:RPM] [--reset-rate F] [--503-rate F] \
                     [--529-rate F] [--rpm-silent] [--connection-rate BYTES] [--organization ID]";

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    files: usize,
    content_bytes: usize,
    /// `--content-bytes-range MIN:MAX`.
    content_range: Option<(usize, usize)>,
    /// `--big-files N:SIZE`.
    big_files: Option<(usize, usize)>,
    /// `--batches N:RESULTS`: N ended batches of RESULTS results each.
    batches: Option<(usize, usize)>,
    seed: u64,
    demo: bool,
    rpm: Option<u32>,
    rpm_burst: Option<u32>,
    /// Seconds after start, and the new limit.
    rpm_change_after: Option<(u64, u32)>,
    no_ranges: bool,
    /// Per mille: body resets, 503s, 529s.
    reset_permille: u32,
    status_503_permille: u32,
    status_529_permille: u32,
    limits: ServerLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            files: 100,
            content_bytes: 1024,
            content_range: None,
            big_files: None,
            batches: None,
            seed: 0,
            demo: false,
            rpm: None,
            rpm_burst: None,
            rpm_change_after: None,
            no_ranges: false,
            reset_permille: 0,
            status_503_permille: 0,
            status_529_permille: 0,
            limits: ServerLimits::default(),
        }
    }
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options::default();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--port" => options.port = number(&arg, &value()?)?,
                "--files" => options.files = number(&arg, &value()?)?,
                "--content-bytes" => options.content_bytes = number(&arg, &value()?)?,
                "--content-bytes-range" => options.content_range = Some(pair(&arg, &value()?)?),
                "--big-files" => options.big_files = Some(pair(&arg, &value()?)?),
                "--batches" => options.batches = Some(pair(&arg, &value()?)?),
                "--seed" => options.seed = number(&arg, &value()?)?,
                "--rpm" => options.rpm = Some(number(&arg, &value()?)?),
                "--rpm-burst" => options.rpm_burst = Some(number(&arg, &value()?)?),
                "--rpm-change-after" => options.rpm_change_after = Some(change(&arg, &value()?)?),
                "--reset-rate" => options.reset_permille = permille(&arg, &value()?)?,
                "--503-rate" => options.status_503_permille = permille(&arg, &value()?)?,
                "--529-rate" => options.status_529_permille = permille(&arg, &value()?)?,
                "--demo" => options.demo = true,
                "--no-ranges" => options.no_ranges = true,
                "--rpm-silent" | "--connection-rate" | "--organization" => {
                    limit_option(&mut options.limits, &arg, value)?;
                }
                "-h" | "--help" => return Err(USAGE.to_owned()),
                _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    fn config(&self) -> MockApiConfig {
        let mut config = if self.demo {
            demo_config()
        } else {
            MockApiConfig::new(self.file_set())
        };
        if let Some((count, results)) = self.batches {
            config = config.with_batches(generated_batches(count, results, self.seed));
        }
        config.rate_limit = self.rpm;
        config.rate_limit_burst = self.rpm_burst;
        config.limits = self.limits.clone();
        if self.no_ranges {
            config = config.without_ranges();
        }
        let rates = [
            self.reset_permille,
            self.status_503_permille,
            self.status_529_permille,
        ];
        if rates.iter().any(|rate| *rate > 0) {
            config = config.with_chaos(Chaos {
                seed: self.seed,
                reset_permille: self.reset_permille,
                status_503_permille: self.status_503_permille,
                status_529_permille: self.status_529_permille,
            });
        }
        config.with_stats_routes()
    }
}

impl Options {
    /// One size for every file unless a range or big files are asked for.
    fn file_set(&self) -> FileSet {
        let (count, seed) = (self.files, self.seed);
        if self.content_range.is_none() && self.big_files.is_none() {
            return FileSet::Generated {
                count,
                seed,
                content_len: self.content_bytes,
            };
        }
        let (min, max) = self
            .content_range
            .unwrap_or((self.content_bytes, self.content_bytes));
        let (big_count, big_len) = self.big_files.unwrap_or((0, 0));
        let sizes = SizeMix {
            min,
            max,
            big_count,
            big_len,
        };
        FileSet::Mixed { count, seed, sizes }
    }
}

/// The bytes of every generated file (0 with `--demo`).
fn total_bytes(files: &FileSet) -> u64 {
    match *files {
        FileSet::Generated {
            count, content_len, ..
        } => count as u64 * content_len as u64,
        FileSet::Mixed { count, seed, sizes } => (0..count)
            .map(|index| mixed_file_len(seed, index, count, sizes) as u64)
            .sum(),
        FileSet::Explicit(_) => 0,
    }
}

/// `A:B`, two numbers.
fn pair(flag: &str, value: &str) -> Result<(usize, usize), String> {
    let (a, b) = value
        .split_once(':')
        .ok_or_else(|| format!("{flag}: expected two numbers as A:B, got {value:?}"))?;
    Ok((number(flag, a)?, number(flag, b)?))
}

/// `--rpm-silent`, `--connection-rate BYTES`, `--organization ID`.
fn limit_option(
    limits: &mut ServerLimits,
    flag: &str,
    mut value: impl FnMut() -> Result<String, String>,
) -> Result<(), String> {
    match flag {
        "--rpm-silent" => limits.rate_limit_headers = false,
        "--connection-rate" => limits.connection_bytes_per_second = Some(number(flag, &value()?)?),
        _ => limits.organisation = Some(value()?),
    }
    Ok(())
}

/// A fraction from 0 to 1, in thousandths.
fn permille(flag: &str, value: &str) -> Result<u32, String> {
    let fraction: f64 = number(flag, value)?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!("{flag}: a fraction from 0 to 1, got {value:?}"));
    }
    Ok((fraction * 1000.0).round() as u32)
}

/// `SECS:RPM`.
fn change(flag: &str, value: &str) -> Result<(u64, u32), String> {
    let (secs, rpm) = value
        .split_once(':')
        .ok_or_else(|| format!("{flag}: expected SECS:RPM, got {value:?}"))?;
    Ok((number(flag, secs)?, number(flag, rpm)?))
}

/// Applies `--rpm-change-after` once, then never completes.
async fn change_limit(api: &MockApi, change: Option<(u64, u32)>) {
    if let Some((secs, rpm)) = change {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        api.set_rate_limit(Some(rpm));
        eprintln!("claudedl-mock: limit changed to {rpm} requests/min after {secs} s");
    }
    std::future::pending::<()>().await;
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a valid number: {value:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let api = match MockApi::bind(options.config(), options.port).await {
        Ok(api) => api,
        Err(error) => {
            eprintln!(
                "claudedl-mock: cannot listen on port {}: {error}",
                options.port
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let total = if options.demo {
        0
    } else {
        total_bytes(&options.file_set())
    };
    let _ = writeln!(
        stdout,
        "base_url={} api_key={} total_bytes={total}",
        api.base_url(),
        api.api_key()
    );
    let _ = stdout.flush();
    drop(stdout);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = change_limit(&api, options.rpm_change_after) => {}
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::Options;
    use claudedl_mock::api::{FileSet, SizeMix, generated_batches};

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn rate_limit_options() {
        let options = parse(&[
            "--rpm",
            "600",
            "--rpm-burst",
            "10",
            "--rpm-change-after",
            "45:300",
        ])
        .unwrap();

        assert_eq!(options.rpm_change_after, Some((45, 300)));
        let config = options.config();
        assert_eq!(
            (config.rate_limit, config.rate_limit_burst),
            (Some(600), Some(10))
        );
        assert!(config.stats_routes);
    }

    #[test]
    fn server_limit_options() {
        let options = parse(&[
            "--rpm",
            "1200",
            "--rpm-silent",
            "--connection-rate",
            "2097152",
            "--organization",
            "org-1",
        ])
        .unwrap();

        let config = options.config();
        assert_eq!(config.rate_limit, Some(1200));
        assert!(!config.limits.rate_limit_headers);
        assert_eq!(config.limits.connection_bytes_per_second, Some(2_097_152));
        assert_eq!(config.limits.organisation.as_deref(), Some("org-1"));
    }

    #[test]
    fn size_options_make_a_mixed_set() {
        let options = parse(&[
            "--files",
            "2004",
            "--content-bytes-range",
            "4096:4194304",
            "--big-files",
            "4:268435456",
        ])
        .unwrap();
        let sizes = SizeMix {
            min: 4096,
            max: 4_194_304,
            big_count: 4,
            big_len: 268_435_456,
        };
        assert_eq!(
            options.file_set(),
            FileSet::Mixed {
                count: 2004,
                seed: 0,
                sizes
            }
        );
        let fixed = parse(&["--content-bytes", "5"]).unwrap().file_set();
        assert!(matches!(fixed, FileSet::Generated { content_len: 5, .. }));
        let error = parse(&["--content-bytes-range", "4096"]).unwrap_err();
        assert!(error.starts_with("--content-bytes-range"), "{error}");
        assert!(
            parse(&["--big-files", "4:x"])
                .unwrap_err()
                .starts_with("--big-files")
        );
    }

    #[test]
    fn batches_option_generates_ended_batches() {
        let config = parse(&["--batches", "3:500", "--seed", "7"])
            .unwrap()
            .config();
        let sizes: Vec<(bool, usize)> = config
            .batches
            .iter()
            .map(|batch| (batch.ended, batch.results.len()))
            .collect();
        assert_eq!(sizes, [(true, 500); 3]);
        let mut ids: Vec<&str> = config.batches.iter().map(|b| b.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert_eq!(config.batches, generated_batches(3, 500, 7));
        assert_ne!(config.batches, generated_batches(3, 500, 8));
        assert!(parse(&[]).unwrap().config().batches.is_empty());
        assert!(
            parse(&["--batches", "3"])
                .unwrap_err()
                .starts_with("--batches")
        );
    }

    #[test]
    fn chaos_rates_are_fractions() {
        let options = parse(&["--reset-rate", "0.2", "--503-rate", "0.05", "--seed", "3"]).unwrap();
        let chaos = options.config().chaos.unwrap();
        assert_eq!(
            (
                chaos.seed,
                chaos.reset_permille,
                chaos.status_503_permille,
                chaos.status_529_permille
            ),
            (3, 200, 50, 0)
        );
        assert!(parse(&[]).unwrap().config().chaos.is_none());
        assert!(
            parse(&["--529-rate", "1.5"])
                .unwrap_err()
                .starts_with("--529-rate")
        );
    }

    #[test]
    fn bad_changes_are_refused() {
        for bad in ["45", "45:", ":300", "x:300", "45:-1"] {
            let error = parse(&["--rpm-change-after", bad]).unwrap_err();
            assert!(error.starts_with("--rpm-change-after"), "{bad}: {error}");
        }
        assert!(
            parse(&["--rpm-burst"])
                .unwrap_err()
                .contains("needs a value")
        );
    }
}
