//! The sqllogictest corpus in `sql/*.slt`, run twice: against the in-memory backend (the
//! SQL layer alone) and against a 3-node cluster of real node servers (the whole stack:
//! placement, Raft, two-phase commit, snapshot reads). Each file gets a fresh database;
//! `connection <name>` records open further sessions on the same database (on another node,
//! for the cluster).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meridian_tests::init_tracing;
use meridian_tests::servers::ServerCluster;
use sql::testing::{MemoryBackend, SltOutput, slt_run};
use sql::{Backend, Session, SqlError};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

/// A sqllogictest connection: one [`Session`].
struct SlDb {
    session: Session,
}

#[async_trait::async_trait]
impl AsyncDB for SlDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        Ok(match slt_run(&mut self.session, sql).await? {
            SltOutput::Rows { types, rows } => DBOutput::Rows {
                types: types
                    .into_iter()
                    .map(|c| {
                        sqllogictest::ColumnType::from_char(c).unwrap_or(DefaultColumnType::Any)
                    })
                    .collect(),
                rows,
            },
            SltOutput::Complete(n) => DBOutput::StatementComplete(n),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meridian"
    }
}

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs `file` with sessions over the backends `backends` hands out in turn; records
/// marked `onlyif <label>` / `skipif <label>` follow `label`.
async fn run_file(
    file: &PathBuf,
    label: &str,
    backends: Vec<Arc<dyn Backend>>,
) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut runner = Runner::new(move || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let backend = Arc::clone(&backends[i % backends.len()]);
        async move {
            Ok::<_, SqlError>(SlDb {
                session: Session::new(backend),
            })
        }
    });
    runner.with_column_validator(sqllogictest::strict_column_validator);
    runner.add_label(label);
    runner
        .run_file_async(file)
        .await
        .map_err(|e| format!("{}: {}", file.display(), e.display(false)))
}

#[tokio::test]
async fn the_corpus_passes_on_the_in_memory_backend() {
    let mut failures = Vec::new();
    for file in corpus() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        if let Err(e) = run_file(&file, "memory", vec![backend]).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_corpus_passes_on_a_three_node_cluster() {
    init_tracing();
    let mut failures = Vec::new();
    for file in corpus() {
        let cluster = ServerCluster::start(3).await.unwrap();
        let backends: Vec<Arc<dyn Backend>> = cluster
            .servers
            .iter()
            .map(|s| Arc::clone(&s.running().unwrap().backend) as Arc<dyn Backend>)
            .collect();
        if let Err(e) = run_file(&file, "cluster", backends).await {
            failures.push(e);
        }
        cluster.shutdown().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
