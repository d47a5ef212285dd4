//! `claudedl-wire LIST [--connections N] [--pipeline DEPTH]`: what the network alone costs for a
//! list of small files (docs/benchmarks-small.md, session 11). Every URL of LIST (one a line,
//! all `http://HOST:PORT/PATH` on one origin) is fetched with a ranged GET and its body read
//! and dropped: no file, no hash. Prints the wall and the CPU the whole machine was busy for
//! meanwhile (from `/proc/stat`: the server's share and the kernel's included).
//!
//! - default: `N` (16) threads, each with one keep-alive connection and one request at a time,
//!   as curl's processes and claudedl's transfers run;
//! - `--pipeline DEPTH`: HTTP/1.1 pipelining, up to DEPTH requests sent ahead on each
//!   connection (N defaults to 2 then), their responses read back to back.
//!
//! Hand-written over a `TcpStream` with `httparse`: no client crate of the stack pipelines
//! (hyper sends a request only once the response before it is read). Bodies must come with a
//! `Content-Length` (nginx's static files do); anything else panics: a measurement, not a
//! client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [list, options @ ..] = &args[1..] else {
        panic!("usage: claudedl-wire LIST [--connections N] [--pipeline DEPTH]");
    };
    let option = |name: &str| {
        let at = options.iter().position(|o| o == name)?;
        Some(options[at + 1].parse::<usize>().expect("a number"))
    };
    let depth = option("--pipeline").unwrap_or(1);
    let default_connections = if depth > 1 { 2 } else { 16 };
    let connections = option("--connections").unwrap_or(default_connections);
    let list = std::fs::read_to_string(list).expect("reading the list");
    let urls: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let origin = origin_of(urls[0]);
    let paths: Vec<String> = urls.iter().map(|url| path_of(url, origin)).collect();

    let (busy_before, started) = (busy_ticks(), Instant::now());
    let bytes: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|c| {
                let mine: Vec<&str> = paths
                    .iter()
                    .skip(c)
                    .step_by(connections)
                    .map(String::as_str)
                    .collect();
                scope.spawn(move || fetch(origin, &mine, depth))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a connection panicked"))
            .sum()
    });
    let wall = started.elapsed();
    let busy = busy_ticks() - busy_before;
    let tick = rustix::param::clock_ticks_per_second() as f64;
    println!(
        "{} files, {bytes} bytes, {connections} connections, {depth} a connection at once: \
         wall {:.0} ms, machine busy {:.0} ms ({:.1} µs a file)",
        paths.len(),
        wall.as_secs_f64() * 1e3,
        busy as f64 / tick * 1e3,
        busy as f64 / tick * 1e6 / paths.len() as f64,
    );
}

/// `HOST:PORT` of an `http://HOST:PORT/…` URL.
fn origin_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    rest.split('/').next().expect("a host")
}

fn path_of(url: &str, origin: &str) -> String {
    let rest = &url["http://".len()..];
    assert_eq!(origin_of(url), origin, "every URL on one origin");
    rest[origin.len()..].to_owned()
}

/// Busy CPU ticks of the whole machine so far (every state of `/proc/stat`'s first line but
/// idle and iowait).
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .expect("a cpu line")
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("a number"))
        .collect();
    ticks.iter().sum::<u64>() - ticks[3] - ticks[4]
}

/// Fetch `paths` from `origin` on one connection, up to `depth` requests outstanding; the
/// body bytes read.
fn fetch(origin: &str, paths: &[&str], depth: usize) -> usize {
    let mut stream = TcpStream::connect(origin).expect("connecting");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut buffer = vec![0u8; 1 << 20];
    let (mut held, mut sent, mut read, mut bytes) = (0, 0, 0, 0);
    while read < paths.len() {
        let mut requests = Vec::new();
        while sent < paths.len() && sent - read < depth {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {origin}\r\nRange: bytes=0-1048575\r\n\r\n",
                paths[sent]
            );
            requests.extend_from_slice(request.as_bytes());
            sent += 1;
        }
        stream.write_all(&requests).expect("sending");
        // Read responses until half the pipeline has come back (all of it, one at a time).
        while read < paths.len() && (sent - read > depth / 2 || sent == paths.len()) {
            match response_len(&buffer[..held]) {
                Some((head, body)) if held >= head + body => {
                    buffer.copy_within(head + body..held, 0);
                    held -= head + body;
                    bytes += body;
                    read += 1;
                }
                _ => {
                    let got = stream.read(&mut buffer[held..]).expect("reading");
                    assert!(got > 0, "the server closed the connection");
                    held += got;
                }
            }
        }
    }
    bytes
}

/// The length of the head and of the body of the response at the start of `buffer`, once its
/// head is whole.
fn response_len(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(buffer).expect("a response") else {
        return None;
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .expect("a Content-Length");
    let body = std::str::from_utf8(length.value)
        .expect("ASCII")
        .parse()
        .expect("a length");
    Some((head, body))
}
