//! Settings: the config file (TOML and the original INI), the environment and the command line,
//! checked through `config show --json` and through what commands do.

use std::path::Path;
use std::process::{Output, Stdio};

use bytes::Bytes;
use claudedl_mock::api::{FileSet, MockApi, MockApiConfig, MockFile};
use serde_json::Value;
use tokio::process::Command;

use crate::support::{data, text};

/// A long key shaped like a real one, so redaction shows its tail.
const KEY: &str = "sk-ant-api03-SECRETSECRETSECRETSECRETSECRETSECRETSECRET-wxyz";

/// `claudedl` in `dir`, with no configuration from the machine running the tests.
pub fn claudedl(dir: &Path) -> Command {
    let mut command = crate::support::claudedl_binary();
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("CLAUDEDL_CONFIG")
        .env_remove("CLAUDEDL_LOG")
        .env_remove("CLAUDEDL_RPM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Write a config file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn show(command: &mut Command, args: &[&str]) -> Value {
    let out = command
        .args(["config", "show", "--json"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn setting<'a>(shown: &'a Value, path: &str) -> (&'a Value, &'a str) {
    let (section, key) = path.split_once('.').unwrap();
    let entry = &shown[section][key];
    (&entry["value"], entry["source"].as_str().unwrap())
}

#[tokio::test]
async fn cli_beats_env_beats_file_beats_default_in_config_show() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[network]\nconnections = 3\nmax_retries = 7\nbase_url = \"http://file.example\"\n\
                  requests_per_minute = 600\n";
    write_private(&dir.path().join("claudedl.toml"), config);
    let shown = show(
        claudedl(dir.path()).env("ANTHROPIC_BASE_URL", "http://env.example"),
        &["--connections", "5"],
    )
    .await;
    let file = dir.path().join("claudedl.toml");
    let from_file = format!("file {}", file.display());
    assert_eq!(shown["config_file"], file.to_str().unwrap());
    assert_eq!(
        setting(&shown, "network.connections"),
        (&5.into(), "cli --connections")
    );
    let base = setting(&shown, "network.base_url");
    assert_eq!(
        base,
        (&"http://env.example".into(), "env ANTHROPIC_BASE_URL")
    );
    assert_eq!(
        setting(&shown, "network.max_retries"),
        (&7.into(), &*from_file)
    );
    let rpm = setting(&shown, "network.requests_per_minute");
    assert_eq!(rpm, (&600.into(), &*from_file));
    assert_eq!(
        setting(&shown, "network.read_timeout"),
        (&60.0.into(), "default")
    );
    assert_eq!(
        setting(&shown, "storage.base_dir"),
        (&"data".into(), "default")
    );
}

#[tokio::test]
async fn the_request_budget_comes_from_env_over_the_file_and_a_bad_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("claudedl.toml"),
        "[network]\nrequests_per_minute = 600\n",
    );
    let shown = show(claudedl(dir.path()).env("CLAUDEDL_RPM", "120"), &[]).await;
    let rpm = setting(&shown, "network.requests_per_minute");
    assert_eq!(rpm, (&120.into(), "env CLAUDEDL_RPM"));
    let shown = show(
        claudedl(dir.path()).env("CLAUDEDL_RPM", "120"),
        &["--rpm", "7"],
    )
    .await;
    let rpm = setting(&shown, "network.requests_per_minute");
    assert_eq!(rpm, (&7.into(), "cli --rpm"));

    let out = claudedl(dir.path())
        .env("CLAUDEDL_RPM", "fast")
        .args(["config", "show"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("CLAUDEDL_RPM"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_named_config_file_wins_over_the_local_one_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("claudedl.toml"),
        "[network]\nconnections = 3\n",
    );
    write_private(
        &dir.path().join("other.toml"),
        "[network]\nconnections = 4\n",
    );
    let shown = show(&mut claudedl(dir.path()), &["--config", "other.toml"]).await;
    assert_eq!(setting(&shown, "network.connections").0, 4);
    let shown = show(
        claudedl(dir.path()).env("CLAUDEDL_CONFIG", "other.toml"),
        &[],
    )
    .await;
    assert_eq!(setting(&shown, "network.connections").0, 4);
    let out = claudedl(dir.path())
        .args(["--config", "missing.toml", "config", "show"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn the_xdg_config_file_is_found_when_there_is_no_local_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("xdg/claudedl")).unwrap();
    let path = dir.path().join("xdg/claudedl/config.toml");
    write_private(&path, "[storage]\nbase_dir = \"/srv/claude\"\n");
    let shown = show(&mut claudedl(dir.path()), &[]).await;
    let base_dir = setting(&shown, "storage.base_dir");
    assert_eq!(base_dir.0, "/srv/claude");
    assert_eq!(base_dir.1, format!("file {}", path.display()));
}

#[tokio::test]
async fn the_original_ini_format_is_read_with_comments_after_values() {
    let dir = tempfile::tempdir().unwrap();
    let ini = format!(
        "# claudedl (original design)\n[auth]\napi_key = {KEY}\n\n[network]\n\
         timeout = 30  # seconds\nmax_retries = 5\n\n[storage]\nbase_dir = ./data\n\
         chunk_size = 10485760  ; 10 MiB\n"
    );
    for name in ["claudedl.conf", "claudedl.toml"] {
        write_private(&dir.path().join(name), &ini);
        let shown = show(&mut claudedl(dir.path()), &["--config", name]).await;
        assert_eq!(setting(&shown, "network.connect_timeout").0, 30.0, "{name}");
        assert_eq!(setting(&shown, "network.read_timeout").0, 30.0);
        assert_eq!(setting(&shown, "network.max_retries").0, 5);
        assert_eq!(setting(&shown, "storage.base_dir").0, "./data");
        assert_eq!(setting(&shown, "storage.chunk_size").0, 10_485_760);
        let key = format!("sk-ant-…wxyz ({} chars)", KEY.len());
        assert_eq!(setting(&shown, "auth.api_key").0, &key);
    }
}

#[tokio::test]
async fn unknown_keys_and_wrong_types_are_usage_errors_naming_key_section_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[network]\nconect_timeout = 5\n",
            "`conect_timeout` in section [network]",
        ),
        ("[netwrk]\ntimeout = 5\n", "unknown section [netwrk]"),
        (
            "[network]\nmax_retries = \"many\"\n",
            "[network] max_retries: expected an integer",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "[log] format: expected text or json",
        ),
    ];
    for (contents, expected) in cases {
        write_private(&dir.path().join("claudedl.toml"), contents);
        let out = claudedl(dir.path())
            .args(["config", "show"])
            .output()
            .await
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("claudedl.toml"), "{stderr}");
    }
}

#[tokio::test]
async fn config_show_never_prints_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("claudedl.toml"),
        &format!("[auth]\napi_key = \"{KEY}\"\n"),
    );
    for args in [&["config", "show"][..], &["config", "show", "--json"]] {
        let out = claudedl(dir.path()).args(args).output().await.unwrap();
        let both = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{both}");
        assert!(both.contains("sk-ant-…wxyz"), "{both}");
        assert!(!both.contains("SECRET"), "{both}");
    }
    let shown = show(
        claudedl(dir.path()).env("ANTHROPIC_API_KEY", "short-key"),
        &[],
    )
    .await;
    let key = setting(&shown, "auth.api_key");
    assert_eq!(key, (&"<set, 9 chars>".into(), "env ANTHROPIC_API_KEY"));
}

#[tokio::test]
async fn a_key_in_a_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claudedl.toml");
    write_private(&path, &format!("[auth]\napi_key = \"{KEY}\"\n"));
    let quiet = claudedl(dir.path())
        .args(["config", "show"])
        .output()
        .await
        .unwrap();
    assert!(
        !text(&quiet.stderr).contains("chmod"),
        "{}",
        text(&quiet.stderr)
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = claudedl(dir.path())
        .args(["config", "show"])
        .output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("chmod 600") && stderr.contains("mode 644"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"));
    // With logs in a file, the warning is in the log and on stderr.
    let out = claudedl(dir.path())
        .args(["--log-file", "log.txt", "config", "show"])
        .output()
        .await
        .unwrap();
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("log.txt")).unwrap();
    assert!(
        log.contains("chmod 600") && !log.contains("SECRET"),
        "{log}"
    );
}

#[tokio::test]
async fn presets_set_timeouts_that_explicit_values_override() {
    let dir = tempfile::tempdir().unwrap();
    let shown = show(&mut claudedl(dir.path()), &["--network", "cross-border"]).await;
    let connect = setting(&shown, "network.connect_timeout");
    assert_eq!(connect, (&60.0.into(), "preset cross-border"));
    assert_eq!(setting(&shown, "network.read_timeout").0, 900.0);

    write_private(
        &dir.path().join("claudedl.toml"),
        "[network]\npreset = \"lan\"\nconnect_timeout = 12\n",
    );
    let shown = show(&mut claudedl(dir.path()), &["--read-timeout", "5"]).await;
    assert_eq!(
        setting(&shown, "network.connect_timeout").0,
        12.0,
        "file beats preset"
    );
    assert_eq!(
        setting(&shown, "network.read_timeout"),
        (&5.0.into(), "cli --read-timeout")
    );
    let shown = show(&mut claudedl(dir.path()), &["--network", "cloud"]).await;
    assert_eq!(setting(&shown, "network.preset").1, "cli --network");
    assert_eq!(
        setting(&shown, "network.read_timeout"),
        (&600.0.into(), "preset cloud")
    );
    assert_eq!(setting(&shown, "network.connect_timeout").0, 12.0);
}

async fn mock_with_files(names: &[&str]) -> MockApi {
    let files = names
        .iter()
        .enumerate()
        .map(|(i, name)| MockFile {
            id: format!("file_{i}"),
            filename: (*name).into(),
            mime_type: "text/plain".into(),
            created_at: "2026-08-05T10:00:00Z".into(),
            downloadable: true,
            expired: false,
            content: Bytes::from(data(20_000 + i, i as u64)),
        })
        .collect();
    MockApi::start(MockApiConfig::new(FileSet::Explicit(files))).await
}

async fn run(command: &mut Command, args: &[&str]) -> Output {
    command.args(args).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_files_key_base_url_and_base_dir_drive_sync_and_flags_and_env_win() {
    let api = mock_with_files(&["a.txt"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[auth]\napi_key = \"{}\"\n[network]\nbase_url = \"{}\"\nrequests_per_minute = 60000\n\
         [storage]\nbase_dir = \"from-file\"\n",
        api.api_key(),
        api.base_url()
    );
    write_private(&dir.path().join("claudedl.toml"), &config);
    let out = run(&mut claudedl(dir.path()), &["sync", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        dir.path()
            .join("from-file/raw/2026-08/file_0_a.txt")
            .is_file()
    );

    let out = run(
        &mut claudedl(dir.path()),
        &["sync", "--data-dir", "from-cli"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        dir.path()
            .join("from-cli/raw/2026-08/file_0_a.txt")
            .is_file()
    );

    // A wrong key in the environment wins over the file's good one.
    let mut command = claudedl(dir.path());
    command.env("ANTHROPIC_API_KEY", "sk-wrong");
    let out = run(&mut command, &["files", "ls"]).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn config_show_prints_the_rules_of_the_defaults_table() {
    let dir = tempfile::tempdir().unwrap();
    let shown = show(&mut claudedl(dir.path()), &[]).await;
    let max = &shown["network"]["max_connections"];
    assert_eq!(max["value"], 16, "{max}");
    assert_eq!(max["source"], "default");
    assert_eq!(max["note"], "the larger of connections and 16");
    let shown = show(&mut claudedl(dir.path()), &["-c", "40"]).await;
    assert_eq!(shown["network"]["max_connections"]["value"], 40);
    let rpm = &shown["network"]["requests_per_minute"];
    assert_eq!(rpm["value"], Value::Null);
    assert_eq!(
        rpm["note"],
        "no ceiling: API commands start at 50/min (or a learned rate) and follow the server; \
         get is unpaced"
    );

    let out = claudedl(dir.path())
        .args(["get", "--connect-timeout", "0", "http://127.0.0.1:9/x"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("positive number of seconds"), "{stderr}");
}
