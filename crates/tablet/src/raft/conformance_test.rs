//! openraft's own storage conformance suite, run against our RocksDB log store and state
//! machine: vote and log persistence, truncation, purge, membership recovery, snapshots.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use storage::{Engine, EngineOptions, Mvcc};
use tokio::sync::watch;

use super::TypeConfig;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use crate::{Progress, TabletId};

struct Builder;

fn failed(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(failed)?;
        let engine = Arc::new(Engine::open(dir.path(), &EngineOptions::default()).map_err(failed)?);
        let tablet = TabletId(42);
        let mvcc = Arc::new(Mvcc::open(Arc::clone(&engine), tablet.keyspace()).map_err(failed)?);
        let (progress, _) = watch::channel(Progress::default());
        let machine = StateMachine::open(
            Arc::clone(&engine),
            mvcc,
            tablet,
            progress,
            Default::default(),
            None,
        )
        .map_err(failed)?;
        Ok((dir, LogStore::new(engine, tablet), machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_the_openraft_suite() {
    Suite::test_all(Builder).await.unwrap();
}
