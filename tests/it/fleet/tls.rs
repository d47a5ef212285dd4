//! TLS to the fleet's database: a cluster with `ssl=on` and a certificate signed by a test CA
//! (`support::postgres::tls_cluster`), reached over TCP on `127.0.0.1`.

use claudedl::store::index::pg_tls::PgConfig;

use super::*;
use crate::support::postgres::{CERT_USER, tls_cluster};

/// A URL to the TLS cluster's database `name` as `localhost` (the certificate's name), with a
/// password the server (trust) ignores and nothing may show.
fn tls_url(name: &str, options: &str) -> String {
    let port = tls_cluster().port();
    format!("postgresql://postgres:hunter2@localhost:{port}/{name}?{options}")
}

/// `claudedl ARGS` against `api` with the fleet's database at `url`.
fn fleet_cli(api: &MockApi, url: String, args: &[&str]) -> tokio::process::Command {
    let mut command = crate::api::claudedl(api);
    command.env("CLAUDEDL_DB", url).args(args);
    command
}

/// Whether the connection of `url` is encrypted, as the server sees it.
async fn encrypted(url: &str) -> bool {
    let config: PgConfig = url.parse().unwrap();
    let pool = claudedl::fleet::pool(config, 1).unwrap();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

/// `sslmode=require` and `verify-full` with the test CA connect encrypted (`disable` does not);
/// `fleet init` and `fleet status` work over `verify-full`; a CA that did not sign the server's
/// certificate is refused with an error that says so, without the password.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_is_reached_over_tls_and_a_wrong_ca_is_refused() {
    let cluster = tls_cluster();
    let db = cluster.database();
    let ca = cluster.tls_file("ca.crt");
    let ca = ca.to_str().unwrap();
    let verify = format!("sslmode=verify-full&sslrootcert={ca}");
    assert!(encrypted(&tls_url(&db.name, "sslmode=require")).await);
    assert!(encrypted(&tls_url(&db.name, &verify)).await);
    assert!(!encrypted(&tls_url(&db.name, "sslmode=disable")).await);

    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(Vec::new()))).await;
    let fleet_cli = |url: String, args: &[&str]| fleet_cli(&api, url, args);
    let init = fleet_cli(
        tls_url(&db.name, &verify),
        &["fleet", "init", "--rpm", "600"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    let status = fleet_cli(tls_url(&db.name, &verify), &["fleet", "status", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["budget_rpm"], 600.0);

    let other = cluster.tls_file("other-ca.crt");
    let wrong = format!("sslmode=verify-full&sslrootcert={}", other.display());
    let refused = fleet_cli(tls_url(&db.name, &wrong), &["fleet", "status"])
        .output()
        .await
        .unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    eprintln!("a wrong CA: {stderr}");
    // The fleet's pool says the same (the budget's listener and the queue connect through it).
    let config: PgConfig = tls_url(&db.name, &wrong).parse().unwrap();
    let pool = claudedl::fleet::pool(config, 1).unwrap();
    let error = claudedl::fleet::queue::status(&pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("UnknownIssuer") && !error.contains("hunter2"),
        "{error}"
    );
    // The name is checked too: the certificate is for localhost, not for this name.
    let port = cluster.port();
    let misnamed = format!(
        "postgresql://postgres@db.invalid:{port}/{}?hostaddr=127.0.0.1&{verify}",
        db.name
    );
    let config: PgConfig = misnamed.parse().unwrap();
    let pool = claudedl::fleet::pool(config, 1).unwrap();
    let Err(error) = pool.get().await else {
        panic!("a certificate for another name was accepted");
    };
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain += &format!(": {cause}");
        source = cause.source();
    }
    assert!(chain.contains("not valid for name"), "{chain}");
}

/// `verify-ca` checks the chain and not the name: the server reached as `db.invalid` (its
/// certificate names `localhost`) is accepted, and a CA that did not sign it is still refused.
/// A role that logs in by certificate (`cert` in `pg_hba.conf`) gets in with `sslcert` and
/// `sslkey`, as `fleet status` does, and is refused without them.
#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_skips_the_name_and_a_client_certificate_logs_in() {
    let cluster = tls_cluster();
    let db = cluster.database();
    let file = |name: &str| cluster.tls_file(name).display().to_string();
    let (ca, other) = (file("ca.crt"), file("other-ca.crt"));
    let identity = format!(
        "sslcert={}&sslkey={}",
        file("client.crt"),
        file("client.key")
    );
    let misnamed = |user: &str, options: &str| {
        format!(
            "postgresql://{user}@db.invalid:{}/{}?hostaddr=127.0.0.1&{options}",
            cluster.port(),
            db.name
        )
    };
    let chain_only = format!("sslmode=verify-ca&sslrootcert={ca}");
    assert!(encrypted(&misnamed("postgres", &chain_only)).await);

    let by_certificate = misnamed(CERT_USER, &format!("{chain_only}&{identity}"));
    let config: PgConfig = by_certificate.parse().unwrap();
    let pool = claudedl::fleet::pool(config, 1).unwrap();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), CERT_USER);

    let api = MockApi::start(MockApiConfig::new(FileSet::Explicit(Vec::new()))).await;
    let status = |url: String| fleet_cli(&api, url, &["fleet", "status"]).output();
    let init = fleet_cli(&api, by_certificate.clone(), &["fleet", "init"])
        .output()
        .await
        .unwrap();
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    let fine = status(by_certificate.clone()).await.unwrap();
    assert_eq!(fine.status.code(), Some(0), "{}", text(&fine.stderr));

    let without = status(misnamed(CERT_USER, &chain_only)).await.unwrap();
    let stderr = text(&without.stderr);
    assert_eq!(without.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");

    let wrong_ca = format!("sslmode=verify-ca&sslrootcert={other}&{identity}");
    let refused = status(misnamed(CERT_USER, &wrong_ca)).await.unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}
