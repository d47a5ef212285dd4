//! Headers given with `-H` and redirects: they stay with their origin unless the user passes
//! `--location-trusted` (as curl); a same-origin redirect keeps them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::claudedl;
use crate::support::text;

const PAYLOAD: &[u8] = b"the payload behind the redirect\n";

/// Each request's path and headers (names lowercase), in arrival order.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A loopback HTTP/1.1 server that records each request's path and headers: `/data` answers
/// the payload, `/same` redirects to `/data` on the same origin, `/away` to `away`.
struct Hop {
    addr: SocketAddr,
    seen: Seen,
}

impl Hop {
    async fn start(away: Option<String>) -> Hop {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, away.clone(), Arc::clone(&log)));
            }
        });
        Hop { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The value of `name` in each request to `path`, in order.
    fn header_of(&self, path: &str, name: &str) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        let requests = seen.iter().filter(|(p, _)| p == path);
        let value = |headers: &Vec<(String, String)>| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        requests.map(|(_, headers)| value(headers)).collect()
    }
}

/// One request per connection, answered with `Connection: close`.
async fn serve(mut stream: TcpStream, away: Option<String>, log: Seen) {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    log.lock().unwrap().push((path.clone(), headers));
    let redirect = |to: &str| format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\n");
    let mut reply = match (path.as_str(), &away) {
        ("/same", _) => redirect("/data"),
        ("/away", Some(away)) => redirect(away),
        ("/data", _) => "HTTP/1.1 200 OK\r\n".to_owned(),
        _ => "HTTP/1.1 404 Not Found\r\n".to_owned(),
    }
    .into_bytes();
    let body = if path == "/data" { PAYLOAD } else { b"" };
    let length = format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    reply.extend_from_slice(length.as_bytes());
    reply.extend_from_slice(body);
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// `claudedl get URL -o out -H 'X-Password: s' -H 'Authorization: Bearer t' [extra]`: the
/// payload must arrive.
async fn get(url: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let mut args = vec!["get", url, "-o", output.to_str().unwrap()];
    args.extend(["-H", "X-Password: s", "-H", "Authorization: Bearer t"]);
    args.extend(extra);
    let out = claudedl().args(&args).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), PAYLOAD);
}

/// Two servers on different loopback ports: different origins.
async fn two_origins() -> (Hop, Hop) {
    let target = Hop::start(None).await;
    let first = Hop::start(Some(target.url("/data"))).await;
    (first, target)
}

#[tokio::test(flavor = "multi_thread")]
async fn given_headers_do_not_follow_a_redirect_to_another_origin() {
    let (first, target) = two_origins().await;
    get(&first.url("/away"), &[]).await;

    assert_eq!(first.header_of("/away", "x-password"), [Some("s".into())]);
    let reached = target.header_of("/data", "x-password");
    assert!(!reached.is_empty());
    assert!(reached.iter().all(Option::is_none), "{reached:?}");
    let authorization = target.header_of("/data", "authorization");
    assert!(authorization.iter().all(Option::is_none));
}

#[tokio::test(flavor = "multi_thread")]
async fn location_trusted_sends_given_headers_to_the_other_origin() {
    let (first, target) = two_origins().await;
    get(&first.url("/away"), &["--location-trusted"]).await;

    let reached = target.header_of("/data", "x-password");
    assert!(!reached.is_empty());
    assert!(
        reached.iter().all(|v| v.as_deref() == Some("s")),
        "{reached:?}"
    );
    let authorization = target.header_of("/data", "authorization");
    assert!(
        authorization
            .iter()
            .all(|v| v.as_deref() == Some("Bearer t"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_same_origin_redirect_keeps_given_headers() {
    let server = Hop::start(None).await;
    get(&server.url("/same"), &[]).await;

    assert_eq!(server.header_of("/same", "x-password"), [Some("s".into())]);
    let reached = server.header_of("/data", "x-password");
    assert!(!reached.is_empty());
    assert!(
        reached.iter().all(|v| v.as_deref() == Some("s")),
        "{reached:?}"
    );
}
