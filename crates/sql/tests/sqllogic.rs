//! Runs the sqllogictest corpus in `sql/*.slt` against sessions over the in-memory backend.
//!
//! Each file gets a fresh backend; `connection <name>` records in a file open further
//! sessions over the same backend, for visibility and isolation tests. To run the corpus
//! against a real cluster, build [`SlDb`] over a session whose backend is the cluster.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use sql::testing::{MemoryBackend, SltOutput, slt_run};
use sql::{Backend, Session, SqlError};
use sqllogictest::{AsyncDB, ColumnType, DBOutput, DefaultColumnType, Runner};

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
                    .map(|c| DefaultColumnType::from_char(c).unwrap_or(DefaultColumnType::Any))
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
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn sqllogictest_corpus() {
    let files = corpus();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut runner = Runner::new(move || {
            let session = Session::new(backend.clone());
            async move { Ok::<_, SqlError>(SlDb { session }) }
        });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {}", file.display(), e.display(false)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
