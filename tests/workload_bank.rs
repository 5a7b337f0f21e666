//! `meridian workload bank` against a real 3-node cluster in this process, through the
//! library functions the command calls: init loads the bank, a run of a few hundred
//! transfers from 4 clients with strong and stale reads finds no violation, and the final
//! total equals the initial one.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meridian_tests::servers::ServerCluster;
use meridian_tests::{init_tracing, seed};
use workload::bank::{self, InitOptions, Initialized, ReadPath, RunOptions, Stop};
use workload::report::OpKind;

const TRANSFERS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_run_on_a_cluster_keeps_the_total() {
    init_tracing();
    let cluster = ServerCluster::start(3).await.unwrap();
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();

    let init = InitOptions {
        urls: urls.clone(),
        accounts: 20,
        total: 10_000,
        reset: false,
    };
    assert_eq!(bank::init(&init).await.unwrap(), Initialized::Loaded);
    assert_eq!(bank::init(&init).await.unwrap(), Initialized::AlreadyThere);
    let other = InitOptions {
        accounts: 10,
        ..init.clone()
    };
    let refused = bank::init(&other).await.unwrap_err().to_string();
    assert!(refused.contains("--reset"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let options = RunOptions {
        clients: 4,
        stop: Stop::Transfers(TRANSFERS),
        read_ratio: 0.2,
        read_path: ReadPath::Both,
        // Short, so the run need not wait long for stale reads to reach the loaded bank.
        staleness: Duration::from_millis(200),
        history: Some(history.clone()),
        expect_total: Some(10_000),
        ..RunOptions::new(urls, seed("a_bank_run_on_a_cluster_keeps_the_total"))
    };
    let report = bank::run(&options).await.unwrap();
    eprintln!("{}", report.render());

    let verdict = &report.verdict;
    assert_eq!(verdict.violations(), 0, "{:?}", verdict.examples);
    assert_eq!(verdict.final_total, Some(10_000));
    let transfers = report.kind(OpKind::Transfer);
    assert_eq!(transfers.count(), TRANSFERS, "every transfer started ended");
    assert!(transfers.ok > 0);
    let reads = report.kind(OpKind::ReadStrong).ok + report.kind(OpKind::ReadStale).ok;
    // The first and final strong reads are checked too.
    assert_eq!(verdict.reads_checked, reads + 2);

    let lines = std::fs::read_to_string(&history).unwrap();
    let ops: u64 = OpKind::ALL.iter().map(|k| report.kind(*k).count()).sum();
    assert_eq!(lines.lines().count() as u64, ops);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["kind"].is_string() && first["end_us"].as_u64() >= first["start_us"].as_u64());

    // The follower read path: stale reads served by followers, checked the same way.
    let follower = RunOptions {
        stop: Stop::Transfers(40),
        read_ratio: 0.5,
        read_path: ReadPath::Follower,
        history: None,
        ..options.clone()
    };
    let report = bank::run(&follower).await.unwrap();
    assert_eq!(
        report.verdict.violations(),
        0,
        "{:?}",
        report.verdict.examples
    );
    assert!(
        report.kind(OpKind::ReadFollower).ok > 0,
        "{}",
        report.render()
    );
    cluster.shutdown().await;
}
