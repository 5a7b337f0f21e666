//! The short nemesis run CI makes: the bank workload on three `meridian` processes while a
//! seeded nemesis kills, freezes, partitions them, strobes their clocks within ε and leaps
//! them beyond it. No read may break the bank's invariant, no list-append history may break
//! strict serializability, and after healing the total must be intact. The long run is one command
//! (`meridian nemesis --duration 10m`, see docs/BENCHMARKS.md).
//!
//! `MERIDIAN_SEED` replays a run; `MERIDIAN_NEMESIS_SECS` changes its length.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use server::nemesis::{FaultKind, NemesisOptions};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Fails the test with `why`, the nodes' last log lines, and the kept directory.
fn fail(dir: tempfile::TempDir, why: &str) -> ! {
    let dir = dir.keep();
    let mut logs = String::new();
    for i in 1..=3 {
        let path = dir.join(format!("node{i}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        logs.push_str(&format!(
            "--- {} (last {} lines)\n",
            path.display(),
            tail.len()
        ));
        for line in tail {
            logs.push_str(line);
            logs.push('\n');
        }
    }
    panic!("{why}\n{logs}kept in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_nemesis_run_finds_no_violation() {
    let seed = env_u64("MERIDIAN_SEED").unwrap_or(20_261_121);
    let seconds = env_u64("MERIDIAN_NEMESIS_SECS").unwrap_or(180);
    eprintln!("nemesis: MERIDIAN_SEED={seed} MERIDIAN_NEMESIS_SECS={seconds}");
    let dir = tempfile::tempdir().unwrap();
    let options = NemesisOptions {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_meridian")),
        dir: dir.path().to_path_buf(),
        nodes: 3,
        seed,
        duration: Duration::from_secs(seconds),
        clients: 4,
        accounts: 10,
        // The full nemesis, leaps beyond ε included: a clock that leaps back fences itself at
        // its next reading, one that leaps ahead when a follower refuses its timestamps
        // (docs/ARCHITECTURE.md, "Fencing, the guarantee").
        faults: vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Skew,
            FaultKind::SkewBeyond,
        ],
        history: dir.path().join("history.jsonl"),
        list_append_clients: 2,
    };
    let run = tokio::time::timeout(
        Duration::from_secs(seconds + 180),
        server::nemesis::run(&options),
    )
    .await;
    let run = match run {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => fail(dir, &format!("the run failed: {e:#}")),
        Err(_) => fail(dir, "the run did not finish in time"),
    };
    let mut report = run.report.render();
    if let Some(list_append) = &run.list_append {
        report.push_str(&list_append.render());
        if list_append.committed == 0 {
            fail(
                dir,
                &format!("no list-append transaction committed:\n{report}"),
            );
        }
    }
    if run.violations != 0 {
        fail(dir, &format!("violations under the nemesis:\n{report}"));
    }
    assert!(
        run.faults.len() >= 3,
        "the nemesis injected only {:?}",
        run.faults
    );
    let transfers = run.report.kind(workload::report::OpKind::Transfer).count();
    assert!(transfers > 0, "no transfer completed:\n{report}");
    let history = std::fs::read_to_string(&options.history).unwrap();
    assert!(history.lines().count() as u64 >= transfers);
}
