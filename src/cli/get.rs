//! `claudedl get`: download URLs to files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use claudedl::api::{ApiConfig, Pagination};
use claudedl::crypt::{Encryption, output_path};
use claudedl::engine::TransferSpec;
use claudedl::http::parse_header_line;
use claudedl::store::names::safe_file_name;
use reqwest::header::HeaderMap;
use url::Url;

use super::args::GetArgs;
use super::common::{self, ExitStatus, GlobalArgs, Target, UsageError};
use super::pipe;
use super::progress::Bars;

pub async fn run(args: GetArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let urls = collect_urls(&args)?;
    let headers = parse_headers(&args.headers)?;
    let api = ApiConfig::from_settings(&global.settings, Pagination::Ga).ok();
    let encrypt = args.encrypt.encryption(&global.settings)?;
    let to_stdout = args.output.as_deref().is_some_and(pipe::is_stdio);
    if to_stdout && encrypt.is_some() {
        bail!(usage(
            "-o - writes plaintext to stdout: drop --encrypt-to (or pipe into age)"
        ));
    }
    let specs = plan_outputs(&args, &urls, &headers, api.as_ref(), encrypt)?;
    let api_base = api_traffic(&urls, api.as_ref());
    let (client, engine) = common::engine(&global.network, api_base, args.location_trusted)?;
    common::cancel_on_ctrl_c(engine.cancel_token());
    if to_stdout {
        let spec = &specs[0];
        let result =
            pipe::to_stdout(&client, &spec.url, &spec.headers, &engine.cancel_token()).await;
        common::report_traffic(&client, global);
        return Ok(common::print_piped(result, &Target::of(spec)));
    }
    let visible = global.bars_visible(args.json);
    let names = specs.iter().map(|s| display_name(&s.output)).collect();
    let targets: Vec<Target> = specs.iter().map(Target::of).collect();
    let bars = Arc::new(Bars::new(names, visible));
    let results = engine
        .download_all(specs, args.jobs.into(), bars.clone())
        .await;
    let status = common::print_results(&results, &targets, args.json, &bars);
    common::report_traffic(&client, global);
    Ok(status)
}

/// The API's base URL when a URL is on its origin: those requests are API traffic, paced by
/// its budget; plain URLs are not (unless `--rpm` is given).
fn api_traffic<'a>(urls: &[Url], api: Option<&'a ApiConfig>) -> Option<&'a Url> {
    let api = api?;
    let on_api = urls.iter().any(|url| url.origin() == api.base_url.origin());
    on_api.then_some(&api.base_url)
}

fn collect_urls(args: &GetArgs) -> anyhow::Result<Vec<Url>> {
    let mut lines = args.urls.clone();
    if let Some(file) = &args.input_file {
        let text = if pipe::is_stdio(file) {
            pipe::read_stdin().context("cannot read the URL list from stdin")?
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the URL list {}", file.display()))?
        };
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
    for path in args.output.iter().chain(&args.dir) {
        common::local_path(path)?;
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut taken = HashSet::new();
    // Requests to the Claude API's origin carry the key from ANTHROPIC_API_KEY or the config
    // file (never from the command line, where other users could read it); `-H` headers take
    // precedence.
    let specs = urls.iter().map(|url| {
        let output = match &args.output {
            Some(output) => output.clone(),
            None => dir.join(unique_name(&name_from_url(url), &mut taken)),
        };
        let output = output_path(output, encrypt.is_some());
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

fn usage(message: &str) -> UsageError {
    UsageError(message.to_owned())
}
