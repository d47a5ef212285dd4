//! `claudedl demo`: sync a bundled mock Claude API into a local directory (the `demo`
//! feature).

use anyhow::Context;
use claudedl::api::{ApiConfig, ApiKey, Pagination};
use claudedl::config::{Layer, resolve};
use claudedl::store::layout::DataDir;
use claudedl::sync::SyncOptions;

use super::args::DemoArgs;
use super::common::{self, ExitStatus, GlobalArgs};
use super::sync::{exit_status, print_summary, run_sync};

/// The demo's request budget (the bundled mock does not limit it).
const DEMO_RPM: u32 = 60_000;

pub async fn run(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let mock = claudedl_mock::api::MockApi::start(claudedl_mock::api::demo_config()).await;
    println!(
        "demo: a mock Claude API is serving sample files and batches at {}",
        mock.base_url()
    );
    let config = ApiConfig::new(
        &mock.base_url(),
        ApiKey::new(mock.api_key()),
        Pagination::Ga,
    )?;
    // The mock is local: a budget of its own size, far above the lowest tier. Nothing else is
    // taken from the config file or the environment (no backup endpoint gets the mock's key).
    let flags = Layer {
        requests_per_minute: Some(DEMO_RPM),
        ..Layer::default()
    };
    let network = resolve(&flags, |_| None, None).network();
    let (api, engine) = common::clients(config, &network)?;
    let data = DataDir::new(&args.data_dir);
    let options = SyncOptions::default();
    let summary = run_sync(&api, &engine, &data, &options, global)
        .await
        .context("demo sync")?;
    print_summary(&summary, &options, false, &api.http().governor().summary());
    common::report_traffic(api.http(), global);
    let root = data.root().display();
    println!("\nwhere things are:");
    println!("  {root}/raw/YYYY-MM/           downloaded files, by month of creation");
    println!("  {root}/raw/YYYY-MM/batches/   batch results (JSONL)");
    println!("  {root}/meta/YYYY-MM.json      per-month metadata");
    println!("  {root}/meta/index.sqlite      the index");
    println!("try:  claudedl ls --data-dir {root} --mime text/csv");
    println!("      claudedl demo --data-dir {root}    (again: nothing new to fetch)");
    Ok(match exit_status(&summary) {
        ExitStatus::Success => ExitStatus::Success,
        _ => ExitStatus::Failure,
    })
}
