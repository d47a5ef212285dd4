//! The fleet's shared budget at full use (issue 14): the wake on a 429 (`LISTEN/NOTIFY`), the
//! server's remaining count re-anchoring the row, and four workers using at least 95 % of the
//! budget without ever exceeding it.

use std::time::Duration;

use claudedl::fleet::budget::{self, CHANNEL, PgBudget};
use claudedl::http::governor::shared::SharedBudget;
use claudedl::store::index::PgIndex;
use claudedl_mock::api::{ApiFault, FileSet, MockApi, MockApiConfig, Route};

use super::*;

/// The fleet's rate in these tests: 1,200/min, one request every 50 ms.
pub(super) const RPM: f64 = 1200.0;
/// The row's burst: `BURST + 1` requests may go back to back.
pub(super) const BURST: usize = 4;

/// A fleet database whose budget is `RPM`/`BURST`, and an API enforcing the same rate with a
/// bucket of `bucket` requests.
pub(super) async fn budgeted_fleet(files: &[MockFile], bucket: u32) -> (MockApi, TestDb) {
    let config = MockApiConfig::new(FileSet::Explicit(files.to_vec()))
        .with_rate_limit(RPM as u32)
        .with_rate_limit_burst(bucket);
    let api = MockApi::start(config).await;
    let db = postgres::database();
    budget_and_queue(&api, &db, &RPM.to_string(), &BURST.to_string()).await;
    (api, db)
}

fn content(request: &claudedl_mock::api::ApiRequest) -> bool {
    request.path.ends_with("/content")
}

/// Two processes' budgets on one row: a pause written by one wakes the other's listener at once
/// (awaited, no sleep), which then reads it. The server's remaining count re-anchors the row:
/// `tat` moves later when fewer are left than the row believes, never earlier.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_wakes_every_listener_and_remaining_reanchors_the_row() {
    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    drop(PgIndex::connect(&config, &db.name).unwrap());
    let pool = claudedl::fleet::pool(config.clone(), 2).unwrap();
    budget::set(&pool, 60.0, 2).await.unwrap();
    let here = PgBudget::new(pool);
    let there = PgBudget::new(claudedl::fleet::pool(config.clone(), 2).unwrap());
    let mut woken = there.wakes().unwrap();
    let _listener = there.listen(config);
    let bounded = |what: &'static str| move |_| panic!("no wake within 10 s: {what}");
    let wait = Duration::from_secs(10);
    tokio::time::timeout(wait, woken.changed())
        .await
        .unwrap_or_else(bounded("listening"))
        .unwrap();
    here.pause(std::time::SystemTime::now() + Duration::from_secs(30))
        .await;
    tokio::time::timeout(wait, woken.changed())
        .await
        .unwrap_or_else(bounded("the pause"))
        .unwrap();
    let paused = there.paused_for().await.as_secs_f64();
    assert!((29.0..=30.0).contains(&paused), "{paused}");
    // A pause that moves nothing later announces nothing: the next wake is the halt's.
    here.pause(std::time::SystemTime::now()).await;
    here.halt("spend limit".into()).await;
    tokio::time::timeout(wait, woken.changed())
        .await
        .unwrap_or_else(bounded("the halt"))
        .unwrap();
    assert_eq!(*woken.borrow(), 3, "ready, the pause, the halt");

    // Re-anchoring (60/min: T = 1 s, burst 2), on a fresh row.
    let db = postgres::database();
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    drop(PgIndex::connect(&config, &db.name).unwrap());
    let pool = claudedl::fleet::pool(config, 2).unwrap();
    budget::set(&pool, 60.0, 2).await.unwrap();
    let row = PgBudget::new(pool);
    assert_eq!(row.reserve().await, Duration::ZERO);
    // The row believes 2 more may go at once; the server says none is left.
    row.anchor(0).await;
    let next = row.reserve().await.as_secs_f64();
    assert!((0.9..=1.0).contains(&next), "re-anchored: {next}");
    // More left than the row lets go at once, or a count that would move it earlier: no change.
    row.anchor(5).await;
    row.anchor(2).await;
    let after = row.reserve().await.as_secs_f64();
    assert!((1.9..=2.0).contains(&after), "never earlier: {after}");
}

/// Every reservation is counted in the database clock's minute, and `fleet status` reports the
/// current and the last full minute: their sum is every reservation made (the reservations and
/// the read take milliseconds, so they span at most one minute boundary).
#[tokio::test(flavor = "multi_thread")]
async fn fleet_status_reports_the_budget_used() {
    let files = account(1, 16);
    let (api, db) = fleet(files).await;
    run_ok(
        &api,
        &db,
        &["fleet", "init", "--rpm", "6000", "--burst", "10"],
    )
    .await;
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let row = PgBudget::new(claudedl::fleet::pool(config, 2).unwrap());
    for _ in 0..7 {
        row.reserve().await;
    }
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(&api, &db, &["fleet", "status", "--json"]).await).unwrap();
    let used = &status["budget_used"];
    let total = used["this_minute"].as_i64().unwrap() + used["last_minute"].as_i64().unwrap();
    assert_eq!(total, 7, "{status}");
    let text = run_ok(&api, &db, &["fleet", "status"]).await;
    assert!(
        text.contains("budget: 6000/min shared, burst 10; reserved "),
        "{text}"
    );
}

/// Four workers against an API that enforces the fleet's rate: in every 1 s and 60 s window the
/// API counts at most `W × rate + burst + 1` requests (plus 2 in a 1 s window: a slot reserved
/// on the database's clock can reach the API a few milliseconds late, next to the following
/// one), and while work is queued at least 95 % of the budget is used.
#[tokio::test(flavor = "multi_thread")]
async fn four_workers_use_the_budget_within_its_bound() {
    const FILES: usize = 220;
    let files = account(FILES, 512);
    let (api, db) = budgeted_fleet(&files, BURST as u32 + 6).await;
    let listed = api.requests().len();
    let log = four_workers_drain(&api, &db, &files, listed).await;
    let sent: Vec<Duration> = log.iter().filter(|r| content(r)).map(|r| r.at).collect();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let span = (*sent.last().unwrap() - sent[0]).as_secs_f64();
    let per_second = RPM / 60.0;
    let allowed = per_second * span + (BURST + 1) as f64;
    let used = sent.len() as f64 / allowed;
    let busiest = claudedl_mock::api::max_in_window(&log, Duration::from_secs(1), |_| true);
    let minute = claudedl_mock::api::max_in_window(&log, Duration::from_secs(60), |_| true);
    eprintln!(
        "{} requests in {span:.2} s: {:.1} % of the budget ({allowed:.0} allowed); busiest \
         second {busiest}, busiest minute {minute}; {throttled} answered 429",
        sent.len(),
        used * 100.0
    );
    assert!(
        busiest <= per_second as usize + BURST + 1 + 2,
        "{busiest} in one second"
    );
    let minute_bound = (per_second * span.min(60.0)).ceil() as usize + BURST + 1 + 2;
    assert!(minute <= minute_bound, "{minute} in one minute");
    assert!(used >= 0.95, "{:.1} % of the budget used", used * 100.0);
}

/// A 429 in the middle of a run (retry-after 2 s): once its pause is in the database (the test
/// hears the same `NOTIFY` as the workers), no worker sends until the 2 s are over; every item
/// still completes.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_429_no_worker_sends_before_retry_after_ends() {
    let files = account(120, 512);
    let (api, db) = budgeted_fleet(&files, BURST as u32 + 6).await;
    let (client, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (heard, mut notified) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = heard.send(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["-j", "4", "--exit-when-empty"];
    let workers = spawn_workers(&api, &db, d, 4, &args);
    wait_for("20 items done", || {
        count(&db, "SELECT count(*) FROM work_items WHERE state = 'done'") >= 20
    })
    .await;
    api.push_fault(ApiFault::Status {
        route: Route::FileContent,
        status: 429,
        times: 1,
        retry_after_secs: Some(2),
    });
    let payload = tokio::time::timeout(Duration::from_secs(30), notified.recv())
        .await
        .expect("the pause is announced within 30 s");
    assert_eq!(payload.as_deref(), Some("pause"));
    let announced = api.requests().len();
    for worker in workers {
        let (status, _, stderr) = finish(worker).await;
        assert!(status.success(), "{stderr}");
    }
    assert_all_complete(&db, dir.path(), &files);
    let log = api.requests();
    let throttle = log.iter().position(|r| r.status == 429).expect("the 429");
    let pause_ends = log[throttle].at + Duration::from_secs(2);
    let raced = log[throttle + 1..announced]
        .iter()
        .filter(|r| content(r))
        .count();
    let early: Vec<Duration> = log[announced..]
        .iter()
        .filter(|r| r.at + Duration::from_millis(20) < pause_ends)
        .map(|r| r.at)
        .collect();
    eprintln!(
        "{raced} requests between the 429 and its announcement; {} after it, before the pause \
         ended",
        early.len()
    );
    assert!(
        early.is_empty(),
        "sent during the pause: {early:?} (ends {pause_ends:?})"
    );
    assert!(
        raced <= 16,
        "{raced} requests in flight when the 429 came (4 workers × 4)"
    );
}
