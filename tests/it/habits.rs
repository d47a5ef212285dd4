//! The habits of curl, rclone and the SDKs (issue 13): pipes, exit codes by kind of failure,
//! selection flags, a dry run that writes nothing, completions and the man page,
//! `ANTHROPIC_AUTH_TOKEN`, custom CAs and certificate errors, HTTP/2 negotiation.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use claudedl_mock::api::{ApiFault, FileSet, MockApi, MockApiConfig, Route};
use tokio::process::Command;

use crate::api::batch;
use crate::support::nginx::Nginx;
use crate::support::{MIB, data, json_lines, mock_file, sha256, sha256_file, text};

/// Run `producer`, its stdout piped into `sha256sum`: the reader's hash and the producer's
/// output (stderr, status).
async fn hash_through_pipe(mut producer: Command) -> (String, Output) {
    let mut child = producer.stdout(Stdio::piped()).spawn().unwrap();
    let pipe: Stdio = child.stdout.take().unwrap().try_into().unwrap();
    let reader = Command::new("sha256sum")
        .stdin(pipe)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let hashed = reader.wait_with_output().await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    let hash = text(&hashed.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (hash, output)
}

#[tokio::test(flavor = "multi_thread")]
async fn dash_o_pipes_the_exact_bytes_into_a_reader_and_dash_i_reads_stdin() {
    let nginx = Nginx::start();
    let content = data(3 * MIB + 17, 130);
    nginx.put("a.bin", &content);
    nginx.put("b.bin", b"second");
    let cwd = tempfile::tempdir().unwrap();

    let mut get = crate::cli::claudedl();
    get.args(["get", &nginx.url("a.bin"), "-o", "-"])
        .current_dir(cwd.path());
    let (hash, output) = hash_through_pipe(get).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(hash, sha256(&content));
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "no file named `-`, no .part: {left:?}");

    let mut get = crate::cli::claudedl();
    get.args(["get", "-i", "-", "-d", "out"])
        .current_dir(cwd.path())
        .stdin(Stdio::piped());
    let mut child = get.spawn().unwrap();
    let urls = format!(
        "{}\n# a comment\n{}\n",
        nginx.url("a.bin"),
        nginx.url("b.bin")
    );
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, urls.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(sha256_file(&cwd.path().join("out/a.bin")), sha256(&content));
    assert_eq!(
        std::fs::read(cwd.path().join("out/b.bin")).unwrap(),
        b"second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_results_pipe_into_a_reader() {
    let api =
        MockApi::start(MockApiConfig::default().with_batches(vec![batch("msgbatch_p", 300)])).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut results = crate::api::claudedl(&api);
    results
        .args(["batches", "results", "msgbatch_p", "-o", "-"])
        .current_dir(cwd.path());
    let (hash, output) = hash_through_pipe(results).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(hash, sha256(&api.results_body("msgbatch_p").unwrap()));
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_failure_has_its_exit_code() {
    let files = vec![mock_file("file_a", "a.csv", "2026-06", data(100, 1))];
    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await;
    let code = |out: &Output| out.status.code();

    let wrong_key = crate::api::claudedl(&api)
        .env("ANTHROPIC_API_KEY", "sk-wrong")
        .args(["files", "ls"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        code(&wrong_key),
        Some(3),
        "401: {}",
        text(&wrong_key.stderr)
    );

    let no_key = crate::api::claudedl(&api)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .args(["files", "ls"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&no_key), Some(3), "{}", text(&no_key.stderr));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let missing = crate::api::run(&api, &["files", "get", "file_nope", "-d", d]).await;
    assert_eq!(code(&missing), Some(4), "404: {}", text(&missing.stderr));

    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let refused = crate::api::claudedl(&api)
        .env("ANTHROPIC_BASE_URL", &unreachable)
        .args(["files", "ls", "--max-retries", "0"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&refused), Some(6), "{}", text(&refused.stderr));
    let refused_get = crate::cli::claudedl()
        .args([
            "get",
            &format!("{unreachable}/x"),
            "--max-retries",
            "0",
            "-o",
        ])
        .arg(dir.path().join("x"))
        .output()
        .await
        .unwrap();
    assert_eq!(code(&refused_get), Some(6), "{}", text(&refused_get.stderr));

    let bad_usage = crate::api::run(&api, &["sync", "--since", "yesterday"]).await;
    assert_eq!(code(&bad_usage), Some(2));
    let s3 = crate::cli::claudedl()
        .args(["get", "http://127.0.0.1:1/x", "-o", "s3://bucket/key"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(code(&s3), Some(2));
    assert!(text(&s3.stderr).contains("s3://"), "{}", text(&s3.stderr));
    assert!(!dir.path().join("s3:").exists());

    let spend = MockApi::start(MockApiConfig::default().with_fault(ApiFault::SpendLimit {
        route: Route::ListFiles,
        times: 10,
    }))
    .await;
    let data_dir = dir.path().join("data");
    let halted = crate::api::run(&spend, &["sync", "--data-dir", data_dir.to_str().unwrap()]).await;
    assert_eq!(code(&halted), Some(5), "{}", text(&halted.stderr));
    assert_eq!(spend.count(Route::ListFiles), 1, "halted: no retry");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_failure_exits_1_and_json_names_the_failed_url_and_path() {
    let nginx = Nginx::start();
    nginx.put("ok.bin", b"fine");
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::claudedl()
        .args([
            "get",
            &nginx.url("ok.bin"),
            &nginx.url("gone.bin"),
            "--json",
            "-d",
        ])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let failed = lines.iter().find(|l| l["status"] == "failed").unwrap();
    assert_eq!(failed["url"], nginx.url("gone.bin"));
    assert_eq!(
        failed["path"],
        dir.path().join("gone.bin").display().to_string()
    );
    assert_eq!(failed["exit_code"], 4);
    let alone = crate::cli::claudedl()
        .args(["get", &nginx.url("gone.bin"), "-d"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(alone.status.code(), Some(4), "every item failed alike");
}

/// The catalogue the filters are checked against.
async fn catalogue() -> MockApi {
    let files = vec![
        mock_file("file_1", "a.csv", "2026-06", data(100, 1)),
        mock_file("file_2", "b.json", "2026-07", data(2_000, 2)).with_mime_type("application/json"),
        mock_file("file_3", "c.png", "2026-08", data(5_000, 3)).with_mime_type("image/png"),
        mock_file("file_4", "d.csv", "2026-08", data(300, 4)),
    ];
    let config =
        MockApiConfig::new(FileSet::Explicit(files)).with_batches(vec![batch("msgbatch_1", 4)]);
    MockApi::start(config).await
}

fn ids(values: impl IntoIterator<Item = serde_json::Value>) -> BTreeSet<String> {
    values
        .into_iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_filter_selects_exactly_the_expected_ids_and_a_dry_run_writes_nothing() {
    let api = catalogue().await;
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let d = data_dir.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["file_1", "file_2", "file_3", "file_4", "msgbatch_1"]),
        (&["--include", "*.csv"], &["file_1", "file_4"]),
        (&["--include", "*.csv", "--exclude", "d*"], &["file_1"]),
        (
            &["--include", "*.png", "--include", "b.*"],
            &["file_2", "file_3"],
        ),
        (&["--mime", "image/*"], &["file_3"]),
        (&["--mime", "text/csv"], &["file_1", "file_4"]),
        (
            &["--since", "2026-07-01"],
            &["file_2", "file_3", "file_4", "msgbatch_1"],
        ),
        (&["--until", "2026-07-01"], &["file_1"]),
        (&["--min-size", "1000"], &["file_2", "file_3"]),
        (&["--max-size", "1000"], &["file_1", "file_4"]),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["sync", "--dry-run", "--json", "--data-dir", d];
        args.extend_from_slice(flags);
        let out = crate::api::claudedl(&api)
            .args(&args)
            .current_dir(cwd.path())
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let planned = summary["planned"].as_array().unwrap().clone();
        assert_eq!(ids(planned), set(expected), "sync {flags:?}");
        // The same grammar on `files ls` (files only).
        let mut args = vec!["files", "ls", "--json"];
        args.extend_from_slice(flags);
        let listed = crate::api::run(&api, &args).await;
        let files = json_lines(&listed).into_iter().map(|f| f["id"].clone());
        let expected_files: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|id| id.starts_with("file_"))
            .collect();
        assert_eq!(ids(files), set(&expected_files), "files ls {flags:?}");
    }
    assert!(!data_dir.exists(), "a dry run creates no data directory");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);

    let plan = crate::api::run(
        &api,
        &["sync", "--dry-run", "--data-dir", d, "--files-only"],
    )
    .await;
    let plan = text(&plan.stdout);
    assert!(plan.contains("would download 4 items, 7.2 KiB"), "{plan}");
    assert!(plan.contains("2026-08       2 items"), "{plan}");
    assert!(!data_dir.exists());

    // Offline, `ls` takes the same flags.
    let synced = crate::api::run(&api, &["sync", "--data-dir", d, "--include", "*.csv"]).await;
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));
    let ls = |flags: &'static [&'static str]| {
        let api = &api;
        async move {
            let mut args = vec!["ls", "--json", "--data-dir", d];
            args.extend_from_slice(flags);
            let out = crate::api::run(api, &args).await;
            ids(json_lines(&out).into_iter().map(|f| f["id"].clone()))
        }
    };
    assert_eq!(
        ls(&["--since", "2026-08-01"]).await,
        set(&["file_3", "file_4"])
    );
    assert_eq!(
        ls(&["--name", "*.csv", "--state", "complete"]).await,
        set(&["file_1", "file_4"])
    );
    assert_eq!(
        ls(&["--min-size", "2000", "--max-size", "2000"]).await,
        set(&["file_2"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_the_man_page_generate() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = crate::cli::claudedl()
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains("claudedl") && script.contains("include"),
            "{shell}"
        );
    }
    let man = crate::cli::claudedl().arg("man").output().await.unwrap();
    assert_eq!(man.status.code(), Some(0));
    let page = text(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH claudedl 1"),
        "{page}"
    );
    let help = crate::cli::claudedl()
        .args(["--help"])
        .output()
        .await
        .unwrap();
    assert!(text(&help.stdout).contains("Exit codes:"));
    let files_ls = crate::cli::claudedl()
        .args(["files", "ls", "--help"])
        .output()
        .await
        .unwrap();
    let files_ls = text(&files_ls.stdout);
    assert!(!files_ls.contains("--connections") && !files_ls.contains("--limit-rate"));
    assert!(files_ls.contains("Examples:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_token_is_sent_as_bearer_and_an_api_key_wins() {
    let api = catalogue().await;
    let out = crate::api::claudedl(&api)
        .env_remove("ANTHROPIC_API_KEY")
        .env("ANTHROPIC_AUTH_TOKEN", api.api_key())
        .args(["files", "ls", "-v"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bearer = format!("Bearer {}", api.api_key());
    let requests = api.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
        assert_eq!(request.header("x-api-key"), None);
    }
    assert!(!text(&out.stderr).contains(&api.api_key()), "never logged");
    let shown = crate::api::claudedl(&api)
        .env_remove("ANTHROPIC_API_KEY")
        .env("ANTHROPIC_AUTH_TOKEN", api.api_key())
        .args(["config", "show"])
        .output()
        .await
        .unwrap();
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("auth_token") && shown.contains("ANTHROPIC_AUTH_TOKEN"),
        "{shown}"
    );
    assert!(!shown.contains(&api.api_key()));

    let before = api.requests().len();
    let both = crate::api::claudedl(&api)
        .env("ANTHROPIC_AUTH_TOKEN", "sk-some-other-token")
        .args(["files", "ls"])
        .output()
        .await
        .unwrap();
    assert_eq!(both.status.code(), Some(0), "{}", text(&both.stderr));
    for request in &api.requests()[before..] {
        assert_eq!(request.header("x-api-key"), Some(api.api_key().as_str()));
        assert_eq!(request.header("authorization"), None);
    }
}

/// A TCP relay to `port` that counts the connections it accepts.
async fn counting_relay(port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (relay_port, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_ca_is_trusted_and_a_bad_certificate_fails_at_once() {
    let nginx = Nginx::start_tls(true);
    let content = data(2 * MIB, 131);
    nginx.put("a.bin", &content);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("a.bin");
    let ca = nginx.ca_cert();
    let trusted = crate::cli::claudedl()
        .args(["get", &nginx.url("a.bin"), "--cacert"])
        .arg(&ca)
        .arg("-o")
        .arg(&output)
        .output()
        .await
        .unwrap();
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted.stderr));
    assert_eq!(sha256_file(&output), sha256(&content));
    let protocols: BTreeSet<String> = nginx.log().into_iter().map(|l| l.protocol).collect();
    assert_eq!(
        protocols,
        set(&["HTTP/1.1"]),
        "bulk transfers default to HTTP/1.1"
    );

    let (relay, connections) = counting_relay(nginx.port()).await;
    let url = format!("https://127.0.0.1:{relay}/a.bin");
    let untrusted = crate::cli::claudedl()
        .args(["get", &url, "--max-retries", "5", "-o"])
        .arg(dir.path().join("b.bin"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        untrusted.status.code(),
        Some(7),
        "{}",
        text(&untrusted.stderr)
    );
    assert!(
        text(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted.stderr)
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a certificate error is not retried"
    );

    let insecure = crate::cli::claudedl()
        .args(["get", &url, "--insecure", "-o"])
        .arg(dir.path().join("c.bin"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        insecure.status.code(),
        Some(0),
        "{}",
        text(&insecure.stderr)
    );
    assert!(text(&insecure.stderr).contains("WARNING: --insecure"));

    let auto = crate::cli::claudedl()
        .args([
            "get",
            &nginx.url("a.bin"),
            "--transfer-http",
            "auto",
            "--cacert",
        ])
        .arg(&ca)
        .arg("-o")
        .arg(dir.path().join("d.bin"))
        .output()
        .await
        .unwrap();
    assert_eq!(auto.status.code(), Some(0), "{}", text(&auto.stderr));
    assert_eq!(sha256_file(&dir.path().join("d.bin")), sha256(&content));
    let last = nginx.log().pop().unwrap();
    assert_eq!(
        last.protocol, "HTTP/2.0",
        "--transfer-http auto negotiates HTTP/2"
    );
}

/// A host with no CA certificate (a minimal container; here `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// name none) fetches plain HTTP all the same; an HTTPS server is refused at once, as a
/// rejected certificate that says what to do, until `--cacert` names its CA.
#[tokio::test(flavor = "multi_thread")]
async fn without_system_roots_plain_http_works_and_https_asks_for_a_cacert() {
    let (plain, tls) = (Nginx::start(), Nginx::start_tls(false));
    let content = data(64 * 1024, 133);
    plain.put("a.bin", &content);
    tls.put("a.bin", &content);
    let dir = tempfile::tempdir().unwrap();
    let no_roots = tempfile::tempdir().unwrap();
    let get = |url: &str, output: &str| {
        let mut command = crate::cli::claudedl();
        command
            .env("SSL_CERT_FILE", no_roots.path().join("none.pem"))
            .env("SSL_CERT_DIR", no_roots.path())
            .args(["get", url, "-o"])
            .arg(dir.path().join(output));
        command
    };

    let fetched = get(&plain.url("a.bin"), "plain.bin")
        .output()
        .await
        .unwrap();
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    assert_eq!(sha256_file(&dir.path().join("plain.bin")), sha256(&content));

    let refused = get(&tls.url("a.bin"), "tls.bin").output().await.unwrap();
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(7), "{said}");
    assert!(said.contains("no CA certificate"), "{said}");
    assert!(said.contains("--cacert FILE"), "{said}");
    assert!(!dir.path().join("tls.bin").exists());

    // A --cacert that is no PEM certificate, or holds one that is no certificate, is refused
    // before anything is sent.
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_der = dir.path().join("not-der.pem");
    std::fs::write(
        &not_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for bad in [&not_pem, &not_der] {
        let refused = get(&tls.url("a.bin"), "tls.bin")
            .arg("--cacert")
            .arg(bad)
            .output()
            .await
            .unwrap();
        let said = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{said}");
        assert!(
            said.contains(&format!("--cacert {}", bad.display())),
            "{said}"
        );
    }
    assert!(tls.log().is_empty(), "nothing was sent to the server");

    let trusted = get(&tls.url("a.bin"), "tls.bin")
        .arg("--cacert")
        .arg(tls.ca_cert())
        .output()
        .await
        .unwrap();
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted.stderr));
    assert_eq!(sha256_file(&dir.path().join("tls.bin")), sha256(&content));
}

/// The measurement behind `--transfer-http`'s default: one 256 MiB file over loopback TLS
/// from nginx offering HTTP/2, 8 ranges, HTTP/1.1 (8 connections) against HTTP/2 (one
/// connection, 8 streams), three alternating runs each. Run with
/// `cargo test --test it bench_http2_bulk -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn bench_http2_bulk_ranged_throughput() {
    let nginx = Nginx::start_tls(true);
    let size = 256 * MIB;
    nginx.put("big.bin", &data(size, 132));
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        for version in ["1.1", "auto"] {
            let output = dir.path().join(format!("{version}-{round}.bin"));
            let started = std::time::Instant::now();
            let out = crate::cli::claudedl()
                .args([
                    "get",
                    &nginx.url("big.bin"),
                    "-c",
                    "8",
                    "--chunk-size",
                    "32MiB",
                ])
                .args(["--transfer-http", version, "--cacert"])
                .arg(nginx.ca_cert())
                .arg("-o")
                .arg(&output)
                .output()
                .await
                .unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let protocols: BTreeSet<String> = nginx.log().into_iter().map(|l| l.protocol).collect();
            println!(
                "round {round} --transfer-http {version}: {:.0} MiB/s ({secs:.2} s) {protocols:?}",
                size as f64 / MIB as f64 / secs
            );
            std::fs::remove_file(&output).unwrap();
        }
    }
}

/// A minimal SOCKS5 server (no authentication, CONNECT to an IPv4 address or a name): the
/// number of connections it relayed.
async fn socks5_proxy() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let relayed = Arc::new(AtomicUsize::new(0));
    let count = relayed.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 2];
                client.read_exact(&mut head).await?;
                let mut methods = vec![0u8; head[1] as usize];
                client.read_exact(&mut methods).await?;
                client.write_all(&[5, 0]).await?;
                let mut request = [0u8; 4];
                client.read_exact(&mut request).await?;
                let host = match request[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        client.read_exact(&mut ip).await?;
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let len = client.read_u8().await? as usize;
                        let mut name = vec![0u8; len];
                        client.read_exact(&mut name).await?;
                        String::from_utf8_lossy(&name).into_owned()
                    }
                    _ => return Ok::<(), std::io::Error>(()),
                };
                let target_port = client.read_u16().await?;
                let mut target =
                    tokio::net::TcpStream::connect((host.as_str(), target_port)).await?;
                client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                count.fetch_add(1, Ordering::SeqCst);
                tokio::io::copy_bidirectional(&mut client, &mut target).await?;
                Ok(())
            });
        }
    });
    (port, relayed)
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_go_through_a_socks5_proxy() {
    let nginx = Nginx::start();
    let content = data(3 * MIB, 133);
    nginx.put("a.bin", &content);
    let (port, relayed) = socks5_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("a.bin");
    for scheme in ["socks5", "socks5h"] {
        let before = relayed.load(Ordering::SeqCst);
        let out = crate::cli::claudedl()
            .args(["get", &nginx.url("a.bin"), "--force", "--proxy"])
            .arg(format!("{scheme}://127.0.0.1:{port}"))
            .arg("-o")
            .arg(&output)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(sha256_file(&output), sha256(&content));
        assert!(
            relayed.load(Ordering::SeqCst) > before,
            "{scheme}: through the proxy"
        );
    }
    let bad = crate::cli::claudedl()
        .args(["get", &nginx.url("a.bin"), "--proxy", "ftp://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
