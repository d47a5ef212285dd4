//! `claudedl get`: download URLs to files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use claudedl::api::{ApiConfig, Pagination};
use claudedl::crypt::{Encryption, output_path};
use claudedl::engine::{Reporter, TransferSpec};
use claudedl::http::parse_header_line;
use claudedl::store::names::safe_file_name;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;
use url::Url;

use super::args::GetArgs;
use super::common::{self, ExitStatus, GlobalArgs, Target, UsageError};
use super::pipe;
use super::progress::Bars;

/// URLs planned ahead of the downloads, at most: the specs and targets of up to twice this many
/// are all a run holds, whatever the length of the list.
const WINDOW: usize = 4096;
/// URLs planned before the first download starts.
const FIRST_PART: usize = 64;

pub async fn run(args: GetArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let list = UrlList::of(&args)?;
    let api = ApiConfig::from_settings(&global.settings, Pagination::Ga).ok();
    let survey = list.survey(api.as_ref())?;
    let headers = parse_headers(&args.headers)?;
    let encrypt = args.encrypt.encryption(&global.settings)?;
    let to_stdout = args.output.as_deref().is_some_and(pipe::is_stdio);
    if to_stdout && encrypt.is_some() {
        bail!(usage(
            "-o - writes plaintext to stdout: drop --encrypt-to (or pipe into age)"
        ));
    }
    check_outputs(&args, survey.count)?;
    // Requests to the API's origin are API traffic, paced by its budget; plain URLs are not
    // (unless `--rpm` is given).
    let api_base = api
        .as_ref()
        .filter(|_| survey.on_api)
        .map(|api| &api.base_url);
    let (client, engine) = common::engine(&global.network, api_base, args.location_trusted)?;
    common::cancel_on_ctrl_c(engine.cancel_token());
    let mut names = UniqueNames::default();
    let mut urls = list.urls()?;
    if to_stdout {
        let first: Vec<Url> = urls.by_ref().take(1).collect::<anyhow::Result<_>>()?;
        let specs = plan_outputs(&args, &first, &headers, api.as_ref(), encrypt, &mut names);
        let spec = &specs[0];
        let result =
            pipe::to_stdout(&client, &spec.url, &spec.headers, &engine.cancel_token()).await;
        common::report_traffic(&client, global);
        return Ok(common::print_piped(result, &Target::of(spec)));
    }
    let bars = Arc::new(Bars::new(Vec::new(), global.bars_visible(args.json)));
    let (feed, fed) = mpsc::channel(WINDOW);
    let mut landed = engine.download_each(fed, args.jobs.into(), bars.clone());
    let mut feed = Some(feed);
    let mut targets = HashMap::new();
    // Results print in the list's order: those landed ahead of an earlier one wait here.
    let (mut ahead, mut printed) = (BTreeMap::new(), 0);
    let (mut failures, mut count, mut unread) = (Vec::new(), 0, None);
    loop {
        if let Some(room) = feed
            .as_ref()
            .and_then(|f| part_room(f.capacity(), count, printed))
        {
            let part = urls
                .by_ref()
                .take(room)
                .collect::<anyhow::Result<Vec<Url>>>();
            match part {
                Ok(part) if !part.is_empty() && !engine.cancel_token().is_cancelled() => {
                    let specs = plan_outputs(
                        &args,
                        &part,
                        &headers,
                        api.as_ref(),
                        encrypt.clone(),
                        &mut names,
                    );
                    let sender = feed.as_ref().expect("room was measured on it");
                    bars.queued(specs.len(), specs.iter().map(|s| s.expected_size).sum());
                    for spec in specs {
                        targets.insert(count, Target::of(&spec));
                        sender
                            .try_send((count, spec))
                            .expect("the feed has room for the part");
                        count += 1;
                    }
                    continue;
                }
                Ok(_) => feed = None,
                // Those already fed finish first (the survey read the list once already).
                Err(error) => (feed, unread) = (None, Some(error)),
            }
        }
        let Some((id, result)) = landed.recv().await else {
            break;
        };
        ahead.insert(id, result);
        while let Some(result) = ahead.remove(&printed) {
            let target = targets.remove(&printed);
            failures.extend(common::print_item(
                &result,
                target.as_ref(),
                args.json,
                &bars,
            ));
            printed += 1;
        }
    }
    common::report_traffic(&client, global);
    if let Some(error) = unread {
        return Err(error);
    }
    Ok(ExitStatus::of_items(&failures, failures.len() < count))
}

/// How many URLs to plan now (`room` in the feed, `count` planned so far, `printed` of them
/// done), if any: a short first part, so that the first downloads start while the rest is
/// planned; then parts of at least half a window, never more than two windows ahead of the
/// first not printed yet.
fn part_room(room: usize, count: usize, printed: usize) -> Option<usize> {
    let room = room.min(2 * WINDOW - (count - printed));
    match count {
        0 => Some(room.min(FIRST_PART)),
        _ => (room >= WINDOW / 2).then_some(room),
    }
}

/// Where the URLs come from: the command line, then the lines of `-i FILE` (read again for each
/// pass, never held whole) or of stdin (held as text).
struct UrlList {
    given: Vec<String>,
    file: Option<PathBuf>,
    stdin: Option<String>,
}

/// What the first pass over the URLs found.
struct Survey {
    count: usize,
    /// Some URL is on the Claude API's origin.
    on_api: bool,
}

impl UrlList {
    fn of(args: &GetArgs) -> anyhow::Result<UrlList> {
        let mut list = UrlList {
            given: args.urls.clone(),
            file: None,
            stdin: None,
        };
        match &args.input_file {
            Some(file) if pipe::is_stdio(file) => {
                let text = pipe::read_stdin().context("cannot read the URL list from stdin")?;
                list.stdin = Some(text);
            }
            Some(file) => list.file = Some(file.clone()),
            None => {}
        }
        Ok(list)
    }

    /// Every URL checked before anything is fetched: their number, and whether one is on the
    /// origin of `api`. The downloads wait for it, so the list is checked in chunks, each
    /// shared among the cores (URL parsing is most of its time: ~0.6 µs a URL).
    fn survey(&self, api: Option<&ApiConfig>) -> anyhow::Result<Survey> {
        let api_origin = api.map(|api| api.base_url.origin());
        let mut survey = Survey {
            count: 0,
            on_api: false,
        };
        let mut lines = self.lines()?;
        loop {
            let mut chunk = Vec::with_capacity(SURVEY_CHUNK);
            let unread = lines
                .by_ref()
                .take(SURVEY_CHUNK)
                .try_for_each(|line| line.map(|line| chunk.push(line)));
            // A bad URL read before a failed read is the error told.
            survey.on_api |= check_chunk(&chunk, api_origin.as_ref())?;
            survey.count += chunk.len();
            unread?;
            if chunk.len() < SURVEY_CHUNK {
                break;
            }
        }
        if survey.count == 0 {
            bail!(usage("no URL given: pass URLs or -i FILE"));
        }
        Ok(survey)
    }

    /// The URLs in order, each parsed and checked.
    fn urls(&self) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Url>> + '_> {
        Ok(self
            .lines()?
            .map(|line| line.and_then(|line| parse_url(&line))))
    }

    /// The lines that give URLs, in order, trimmed (blank lines and `#` comments left out).
    fn lines(&self) -> anyhow::Result<impl Iterator<Item = anyhow::Result<String>> + '_> {
        let listed: Box<dyn Iterator<Item = anyhow::Result<String>>> =
            match (&self.file, &self.stdin) {
                (Some(file), _) => {
                    let opened = std::fs::File::open(file)
                        .with_context(|| format!("cannot read the URL list {}", file.display()))?;
                    let lines = std::io::BufReader::new(opened).lines().map(move |line| {
                        line.with_context(|| format!("cannot read the URL list {}", file.display()))
                    });
                    Box::new(lines)
                }
                (None, Some(text)) => Box::new(text.lines().map(|line| Ok(line.to_owned()))),
                (None, None) => Box::new(std::iter::empty()),
            };
        let listed = listed.filter(|line| {
            line.as_ref()
                .map_or(true, |l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        });
        let given = self.given.iter().map(|line| Ok(line.clone()));
        Ok(given.chain(listed).map(|line| line.map(trimmed)))
    }
}

/// `line` without the blanks around it (the same string when it has none).
fn trimmed(line: String) -> String {
    match line.trim() {
        trim if trim.len() == line.len() => line,
        trim => trim.to_owned(),
    }
}

/// Lines the survey checks at once, shared among the cores.
const SURVEY_CHUNK: usize = 16 * 1024;

/// Check each of `lines` (the first that is no URL we fetch is the error), shared among the
/// cores, each share on a thread of its own; whether one of them is on `api_origin`.
fn check_chunk(lines: &[String], api_origin: Option<&url::Origin>) -> anyhow::Result<bool> {
    let share = lines.len().div_ceil(claudedl::cores()).max(1);
    let check = |share: &[String]| -> anyhow::Result<bool> {
        let mut on_api = false;
        for line in share {
            let url = parse_url(line)?;
            on_api |= api_origin.is_some_and(|origin| *origin == url.origin());
        }
        Ok(on_api)
    };
    std::thread::scope(|scope| {
        let mut shares = lines.chunks(share);
        let first = shares.next().unwrap_or_default();
        // A share whose thread cannot be had is checked here, in turn.
        let others: Vec<_> = shares
            .map(|share| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || check(share))
                    .map_err(|_| share)
            })
            .collect();
        let mut on_api = check(first)?;
        for other in others {
            on_api |= match other {
                Ok(thread) => thread.join().expect("a URL check panicked")?,
                Err(share) => check(share)?,
            };
        }
        Ok(on_api)
    })
}

fn parse_url(line: &str) -> anyhow::Result<Url> {
    let url = Url::parse(line).map_err(|e| usage(&format!("invalid URL {line:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(usage(&format!("unsupported scheme {other:?} in {line:?}")).into()),
    }
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

/// `-o` names one file; `-o` and `-d` are local paths.
fn check_outputs(args: &GetArgs, count: usize) -> anyhow::Result<()> {
    if args.output.is_some() && count > 1 {
        bail!(usage("-o names one file; use -d DIR for several URLs"));
    }
    for path in args.output.iter().chain(&args.dir) {
        common::local_path(path)?;
    }
    Ok(())
}

/// Where each URL goes: `-o` for a single URL, else `-d` (or the current directory) plus a safe
/// name from the URL's last path segment, made unique within this run (`names`).
fn plan_outputs(
    args: &GetArgs,
    urls: &[Url],
    headers: &HeaderMap,
    api: Option<&ApiConfig>,
    encrypt: Option<Arc<Encryption>>,
    names: &mut UniqueNames,
) -> Vec<TransferSpec> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    // Requests to the Claude API's origin carry the key from ANTHROPIC_API_KEY or the config
    // file (never from the command line, where other users could read it); `-H` headers take
    // precedence.
    let specs = urls.iter().map(|url| {
        let output = match &args.output {
            Some(output) => output.clone(),
            None => dir.join(names.give(&name_from_url(url))),
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
    specs.collect()
}

fn name_from_url(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    safe_file_name(&decoded, "download")
}

/// The names given so far in a run, each unique: a name already given becomes `STEM.N.EXT`
/// with the smallest N ≥ 1 not given yet (`a.bin`, `a.1.bin`, `a.2.bin`…).
#[derive(Debug, Default)]
struct UniqueNames {
    given: HashSet<String>,
    /// For a name given more than once, the N its next copy tries first: every smaller one is
    /// given already (nothing is ever taken back), so a list of a million URLs that end in
    /// the same segment (`…/content`) costs one try a URL, not one a copy before it.
    next_suffix: HashMap<String, u64>,
}

impl UniqueNames {
    fn give(&mut self, name: &str) -> String {
        if self.given.insert(name.to_owned()) {
            return name.to_owned();
        }
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
            _ => (name, ""),
        };
        let n = self.next_suffix.entry(name.to_owned()).or_insert(1);
        loop {
            let candidate = format!("{stem}.{n}{ext}");
            *n += 1;
            if self.given.insert(candidate.clone()) {
                return candidate;
            }
        }
    }
}

fn usage(message: &str) -> UsageError {
    UsageError(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_part_is_short_and_later_ones_wait_for_half_a_window() {
        assert_eq!(part_room(WINDOW, 0, 0), Some(FIRST_PART));
        assert_eq!(
            part_room(WINDOW - FIRST_PART, FIRST_PART, 0),
            Some(WINDOW - FIRST_PART)
        );
        assert_eq!(
            part_room(WINDOW / 2 - 1, 5000, 2000),
            None,
            "less than half a window free"
        );
        assert_eq!(part_room(WINDOW / 2, 5000, 2000), Some(WINDOW / 2));
    }

    /// The rule as first written: each copy tries N = 1, 2, … until one is free.
    fn first_free_suffix(name: &str, given: &mut HashSet<String>) -> String {
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
            _ => (name, ""),
        };
        let mut candidate = name.to_owned();
        let mut n = 1;
        while !given.insert(candidate.clone()) {
            candidate = format!("{stem}.{n}{ext}");
            n += 1;
        }
        candidate
    }

    fn give_all(list: &[&str]) -> Vec<String> {
        let mut names = UniqueNames::default();
        list.iter().map(|name| names.give(name)).collect()
    }

    #[test]
    fn copies_are_numbered_in_order_around_the_names_the_list_gives() {
        let list = [
            "a.bin", "a.bin", "a.1.bin", "a.bin", "a.3.bin", "a.bin", "a.bin",
        ];
        assert_eq!(
            give_all(&list),
            [
                "a.bin",
                "a.1.bin",
                "a.1.1.bin",
                "a.2.bin",
                "a.3.bin",
                "a.4.bin",
                "a.5.bin"
            ]
        );
        assert_eq!(
            give_all(&["README", "README", ".env", ".env"]),
            ["README", "README.1", ".env", ".env.1"]
        );
    }

    #[test]
    fn names_are_those_of_the_first_rule() {
        // Every list of 6 names from a small alphabet that collides with itself.
        let alphabet = ["a.bin", "a.1.bin", "a.2.bin", "a.1.1.bin", "b"];
        for code in 0..alphabet.len().pow(6) {
            let list: Vec<&str> = (0..6)
                .map(|digit| alphabet[code / alphabet.len().pow(digit) % alphabet.len()])
                .collect();
            let mut given = HashSet::new();
            let expected: Vec<String> = list
                .iter()
                .map(|name| first_free_suffix(name, &mut given))
                .collect();
            assert_eq!(give_all(&list), expected, "{list:?}");
        }
    }

    #[test]
    fn each_copy_of_a_name_takes_one_try() {
        let mut names = UniqueNames::default();
        let copies = 200_000;
        let last = (0..copies).map(|_| names.give("content")).last();
        assert_eq!(last.as_deref(), Some("content.199999"));
        assert_eq!(names.given.len(), copies);
        assert_eq!(
            names.next_suffix["content"], copies as u64,
            "one suffix tried a copy"
        );
    }

    #[test]
    fn planning_stays_within_two_windows_of_the_first_not_printed() {
        assert_eq!(
            part_room(WINDOW, 2 * WINDOW, 0),
            None,
            "the first URL still runs"
        );
        assert_eq!(part_room(WINDOW, 2 * WINDOW, WINDOW / 2), Some(WINDOW / 2));
        assert_eq!(part_room(WINDOW, 3 * WINDOW, 2 * WINDOW), Some(WINDOW));
    }
}
