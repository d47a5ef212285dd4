//! `claudedl get`: download URLs to files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::header::HeaderMap;
use url::Url;

use super::args::GetArgs;
use super::network::{self, Traffic};
use super::progress::Bars;
use super::settings;
use super::{ExitStatus, GlobalArgs};
use crate::api::{ApiConfig, Pagination};
use crate::crypt::{Encryption, age_path};
use crate::engine::{TransferError, TransferReport, TransferSpec, TransferStatus};
use crate::http::parse_header_line;
use crate::store::names::safe_file_name;

pub async fn run(args: GetArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let urls = collect_urls(&args)?;
    let headers = parse_headers(&args.headers)?;
    let api = ApiConfig::from_settings(&global.settings, Pagination::Ga).ok();
    let encrypt = args.encrypt.encryption(&global.settings)?;
    let specs = plan_outputs(&args, &urls, &headers, api.as_ref(), encrypt)?;
    let mut network = settings::network_args(&global.settings, &args.network);
    let traffic = traffic(&urls, api);
    if matches!(traffic, Traffic::Urls) {
        // A configured budget is the API's: plain URLs are paced by `--rpm` only.
        network.requests_per_minute = args.network.requests_per_minute;
    }
    let (client, engine) = network::engine(&network, &traffic, args.location_trusted)?;
    let cancel = engine.cancel_token();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let visible = global.bars_visible(args.json);
    let names = specs.iter().map(|s| display_name(&s.output)).collect();
    let bars = Arc::new(Bars::new(names, visible));
    let results = engine
        .download_all(specs, args.jobs.into(), bars.clone())
        .await;
    let status = print_results(&results, args.json, &bars);
    network::report_traffic(&client, global);
    Ok(status)
}

/// Requests to the Claude API's origin are paced by its budget; plain URLs are not (unless
/// `--rpm` is given).
fn traffic(urls: &[Url], api: Option<ApiConfig>) -> Traffic {
    match api {
        Some(api) if urls.iter().any(|url| url.origin() == api.base_url.origin()) => Traffic::Api {
            base_url: api.base_url,
        },
        _ => Traffic::Urls,
    }
}

fn collect_urls(args: &GetArgs) -> anyhow::Result<Vec<Url>> {
    let mut lines = args.urls.clone();
    if let Some(file) = &args.input_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the URL list {}", file.display()))?;
        lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if lines.is_empty() {
        bail!(usage("no URL given: pass URLs or -i FILE"));
    }
    lines
        .iter()
        .map(|line| {
            let url = Url::parse(line).map_err(|e| usage(&format!("invalid URL {line:?}: {e}")))?;
            match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(usage(&format!("unsupported scheme {other:?} in {line:?}")).into()),
            }
        })
        .collect()
}

fn parse_headers(lines: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = parse_header_line(line)
            .ok_or_else(|| usage("a header must look like 'Name: value'"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Where each URL goes: `-o` for a single URL, else `-d` (or the current directory) plus a safe
/// name from the URL's last path segment, made unique within this run.
fn plan_outputs(
    args: &GetArgs,
    urls: &[Url],
    headers: &HeaderMap,
    api: Option<&ApiConfig>,
    encrypt: Option<Arc<Encryption>>,
) -> anyhow::Result<Vec<TransferSpec>> {
    if args.output.is_some() && urls.len() > 1 {
        bail!(usage("-o names one file; use -d DIR for several URLs"));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut taken = HashSet::new();
    // Requests to the Claude API's origin carry the key from ANTHROPIC_API_KEY or the config
    // file (never from the command line, where other users could read it); `-H` headers take
    // precedence.
    let specs = urls.iter().map(|url| {
        let mut output = match &args.output {
            Some(output) => output.clone(),
            None => dir.join(unique_name(&name_from_url(url), &mut taken)),
        };
        if encrypt.is_some() {
            output = age_path(&output);
        }
        let mut headers_for_url = api.map(|api| api.headers_for(url)).unwrap_or_default();
        headers_for_url.extend(headers.clone());
        TransferSpec {
            headers: headers_for_url,
            overwrite: args.force,
            encrypt: encrypt.clone(),
            ..TransferSpec::new(url.clone(), output)
        }
    });
    Ok(specs.collect())
}

fn name_from_url(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    safe_file_name(&decoded, "download")
}

fn unique_name(name: &str, taken: &mut HashSet<String>) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let mut candidate = name.to_owned();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{stem}.{n}{ext}");
        n += 1;
    }
    candidate
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn print_results(
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

fn usage(message: &str) -> super::UsageError {
    super::UsageError(message.to_owned())
}
