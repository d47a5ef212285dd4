//! Listings that must end: a server whose pagination loops (a repeated GA `next_page`, beta
//! `has_more` with the same `last_id`, pages of ids already listed) stops `sync`, `files ls` and
//! `batches ls` within a bound, with a message naming the request-id, after a few requests.

use std::process::Output;
use std::time::Duration;

use claudedl::store::index::{Index, SqliteIndex};
use claudedl::store::layout::DataDir;
use claudedl_mock::api::{ApiFault, ListingFault, MockApi, MockApiConfig, Route};

use crate::api::{batch, claudedl, small_account};
use crate::support::text;

/// Far more than any of these tests needs; a loop would hit it.
const BOUND: Duration = Duration::from_secs(30);

async fn looping_api(route: Route, fault: ListingFault) -> MockApi {
    let config = MockApiConfig::new(claudedl_mock::api::FileSet::Explicit(small_account()))
        .with_batches(vec![batch("msgbatch_a", 3), batch("msgbatch_b", 2)])
        .with_fault(ApiFault::Listing {
            route,
            fault,
            times: u32::MAX,
        });
    MockApi::start(config).await
}

/// Run with a time bound; a listing that never ends fails the test here.
async fn bounded(api: &MockApi, args: &[&str]) -> Output {
    let mut command = claudedl(api);
    command.args(args).kill_on_drop(true);
    tokio::time::timeout(BOUND, command.output())
        .await
        .unwrap_or_else(|_| panic!("claudedl {args:?} did not end within {BOUND:?}"))
        .unwrap()
}

/// Exit 1, a message that says the listing loops and names the request-id of the last page, and
/// at most three list requests to `route`.
fn assert_stopped(api: &MockApi, route: Route, out: &Output, listed_before: usize) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pagination loops"), "{stderr}");
    let last = api
        .requests()
        .into_iter()
        .rfind(|r| r.route == route)
        .expect("a list request");
    let request_id = format!(
        "(request-id req_mock_{})",
        api.requests().iter().position(|r| r == &last).unwrap() + 1
    );
    assert!(stderr.contains(&request_id), "{request_id} in {stderr}");
    let list_requests = api.count(route) - listed_before;
    assert!(list_requests <= 3, "{list_requests} list requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_ga_next_page_stops_sync_and_files_ls() {
    let api = looping_api(Route::ListFiles, ListingFault::RepeatCursor).await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();

    let sync = bounded(&api, &["sync", "--data-dir", d, "--files-only"]).await;
    assert_stopped(&api, Route::ListFiles, &sync, 0);
    assert!(text(&sync.stderr).contains("points again to a page it already listed"));
    // The files of the pages listed before the loop showed download meanwhile; each one
    // fetched is recorded (complete, or skipped: gone) before the sync ends with the error.
    let index = SqliteIndex::open(&DataDir::new(data.path()).index_path()).unwrap();
    let fetched: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::FileContent)
        .map(|r| r.path.split('/').nth(3).unwrap().to_owned())
        .collect();
    assert!(!fetched.is_empty());
    for id in fetched {
        let state = index.file(&id).unwrap().unwrap().state;
        assert!(state.is_settled(), "{id} is {state}");
    }

    let before = api.count(Route::ListFiles);
    let ls = bounded(&api, &["files", "ls"]).await;
    assert_stopped(&api, Route::ListFiles, &ls, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_beta_last_id_stops_sync_and_files_ls() {
    let api = looping_api(Route::ListFiles, ListingFault::RepeatCursor).await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();

    let args = ["sync", "--data-dir", d, "--files-only", "--beta-pagination"];
    let sync = bounded(&api, &args).await;
    assert_stopped(&api, Route::ListFiles, &sync, 0);
    let first = &api.requests()[0];
    assert_eq!(first.header("anthropic-beta"), Some("files-api-2025-04-14"));

    let before = api.count(Route::ListFiles);
    let ls = bounded(&api, &["files", "ls", "--beta-pagination"]).await;
    assert_stopped(&api, Route::ListFiles, &ls, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_batches_last_id_stops_sync_and_batches_ls() {
    let api = looping_api(Route::ListBatches, ListingFault::RepeatCursor).await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();

    let sync = bounded(&api, &["sync", "--data-dir", d, "--batches-only"]).await;
    assert_stopped(&api, Route::ListBatches, &sync, 0);
    assert_eq!(api.count(Route::BatchResults), 0);

    let before = api.count(Route::ListBatches);
    let ls = bounded(&api, &["batches", "ls"]).await;
    assert_stopped(&api, Route::ListBatches, &ls, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_ids_already_listed_stop_sync_and_files_ls() {
    // Every cursor is new, so only the "no new id" rule can end this listing.
    let api = looping_api(Route::ListFiles, ListingFault::RepeatItems).await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();

    let sync = bounded(&api, &["sync", "--data-dir", d, "--files-only", "--full"]).await;
    assert_stopped(&api, Route::ListFiles, &sync, 0);
    assert!(text(&sync.stderr).contains("holds no id that was not already listed"));

    let before = api.count(Route::ListFiles);
    let ls = bounded(&api, &["files", "ls", "--beta-pagination"]).await;
    assert_stopped(&api, Route::ListFiles, &ls, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_honest_listing_over_many_pages_still_ends_cleanly() {
    let api = MockApi::start(MockApiConfig::new(claudedl_mock::api::FileSet::Explicit(
        small_account(),
    )))
    .await;
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let args = [
        "sync",
        "--data-dir",
        d,
        "--metadata-only",
        "--page-size",
        "1",
    ];
    let out = bounded(&api, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Five files, one per page: the fifth page says it is the last.
    assert_eq!(api.count(Route::ListFiles), 5);
}
