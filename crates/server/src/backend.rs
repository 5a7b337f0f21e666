//! SQL's view of the cluster ([`sql::Backend`]): transactions of the transaction layer, and
//! new tablets for new tables.

use std::sync::Arc;
use std::time::Duration;

use locks::Priority;
use sql::{Backend, Kv, KvError, KvFuture, KvTxn, TimestampBound, TxnMode, TxnPriority};
use storage::KeyRange;
use tablet::TabletId;
use truetime::Timestamp;
use txn::{ReadBound, ReadOnlyTxn, ReplicaChoice, Transaction, TxnClient, TxnError};

use crate::membership::{AdminCall, admin_call};
use crate::placement::{ClusterDirectory, RangeInfo};

/// The next tablet id to hand out, in the meta tablet.
const NEXT_TABLET_KEY: &[u8] = b"m/next_tablet";
/// Tablet ids below this are reserved (1 is the meta tablet).
const FIRST_TABLET: u64 = 100;

/// Runs SQL's transactions on the cluster.
#[derive(Debug)]
pub struct ClusterBackend {
    client: Arc<TxnClient>,
    directory: Arc<ClusterDirectory>,
    /// Where read-only transactions read.
    pub replicas: ReplicaChoice,
}

impl ClusterBackend {
    /// A backend running transactions through `client`.
    pub fn new(client: Arc<TxnClient>, directory: Arc<ClusterDirectory>) -> Self {
        ClusterBackend {
            client,
            directory,
            replicas: ReplicaChoice::Any,
        }
    }

    /// The same backend with read-only transactions served by `replicas`.
    pub fn reading_at(&self, replicas: ReplicaChoice) -> ClusterBackend {
        ClusterBackend {
            client: Arc::clone(&self.client),
            directory: Arc::clone(&self.directory),
            replicas,
        }
    }

    async fn allocate_tablet(&self) -> Result<TabletId, TxnError> {
        let (id, _) = self
            .client
            .read_write(|tx| {
                Box::pin(async move {
                    let next = tx
                        .read(NEXT_TABLET_KEY)
                        .await?
                        .and_then(|v| v.try_into().ok())
                        .map_or(FIRST_TABLET, u64::from_be_bytes);
                    tx.write(NEXT_TABLET_KEY, (next + 1).to_be_bytes().to_vec());
                    Ok(next)
                })
            })
            .await?;
        Ok(TabletId(id))
    }

    async fn make_tablet(&self, start: Vec<u8>, end: Vec<u8>) -> anyhow::Result<()> {
        if self
            .directory
            .range_at(&start)
            .is_some_and(|r| r.end == end)
        {
            return Ok(());
        }
        let tablet = self.allocate_tablet().await?;
        let membership = self.directory.membership();
        let replicas = membership.pick_replicas(tablet.0);
        let members = membership.addresses_of(&replicas);
        for address in members.values() {
            admin_call(address, &AdminCall::CreateReplica(tablet)).await?;
        }
        // The first replica (rotated by tablet id) starts the group and so usually leads
        // it: leaders spread over the nodes.
        let first = replicas
            .first()
            .and_then(|n| members.get(n))
            .ok_or_else(|| anyhow::anyhow!("no nodes to place {tablet} on"))?;
        admin_call(
            first,
            &AdminCall::Bootstrap {
                tablet,
                members: members.clone(),
            },
        )
        .await?;
        let info = RangeInfo {
            tablet,
            start: start.clone(),
            end,
            replicas,
        };
        let record = serde_json::to_vec(&info)?;
        let key = RangeInfo::key(&start);
        self.client
            .read_write(|tx| {
                let (key, record) = (key.clone(), record.clone());
                Box::pin(async move {
                    if tx.read(&key).await?.is_none() {
                        tx.write(key, record);
                    }
                    Ok(())
                })
            })
            .await?;
        if !self
            .directory
            .wait_for_range(&start, Duration::from_secs(20))
            .await
        {
            anyhow::bail!("{tablet} was created but has no leader yet; retry");
        }
        Ok(())
    }
}

impl ClusterBackend {
    /// Makes `key` the first key of a tablet: splits the tablet holding it (at its leader)
    /// and records both halves in placement. Idempotent: a key that already starts a tablet
    /// is left alone, and a split that happened but was not recorded is found again.
    async fn split_once(&self, key: &[u8]) -> anyhow::Result<()> {
        let directory = &self.directory;
        txn::Directory::sync(directory.as_ref()).await;
        let parent = directory
            .range_of(key)
            .ok_or_else(|| anyhow::anyhow!("no tablet holds the split key"))?;
        if parent.start == key {
            return Ok(());
        }
        anyhow::ensure!(
            parent.tablet != crate::membership::META_TABLET,
            "the meta tablet is not split"
        );
        let membership = directory.membership();
        let members = membership.addresses_of(&parent.replicas);
        let fresh = self.allocate_tablet().await?;
        let leader = txn::Directory::leader(directory.as_ref(), parent.tablet)
            .ok_or_else(|| anyhow::anyhow!("{} has no leader; retry", parent.tablet))?;
        let child = leader
            .split(parent.tablet, key.to_vec(), fresh, members)
            .await?;
        let lower = RangeInfo {
            end: key.to_vec(),
            ..parent.clone()
        };
        let upper = RangeInfo {
            tablet: child,
            start: key.to_vec(),
            end: parent.end.clone(),
            replicas: parent.replicas.clone(),
        };
        let records = [
            (RangeInfo::key(&lower.start), serde_json::to_vec(&lower)?),
            (RangeInfo::key(&upper.start), serde_json::to_vec(&upper)?),
        ];
        self.client
            .read_write(|tx| {
                let records = records.clone();
                Box::pin(async move {
                    for (key, record) in records {
                        tx.write(key, record);
                    }
                    Ok(())
                })
            })
            .await?;
        anyhow::ensure!(
            directory.wait_for_range(key, Duration::from_secs(20)).await,
            "{child} was split off but has no leader yet; retry"
        );
        Ok(())
    }
}

impl Backend for ClusterBackend {
    fn begin(&self, mode: TxnMode) -> KvFuture<'_, Box<dyn KvTxn>> {
        Box::pin(async move {
            let txn: Box<dyn KvTxn> = match mode {
                TxnMode::ReadWrite { priority } => {
                    let priority = priority.map(|p| Priority {
                        first_start: p.first_start,
                        tiebreak: p.tiebreak,
                    });
                    Box::new(ReadWrite {
                        txn: self.client.begin(priority).map_err(kv_error)?,
                        client: Arc::clone(&self.client),
                    })
                }
                TxnMode::ReadOnly(bound) => Box::new(ReadOnly(
                    self.client
                        .begin_read_only(read_bound(bound), self.replicas)
                        .map_err(kv_error)?,
                )),
            };
            Ok(txn)
        })
    }

    fn create_range(&self, start: Vec<u8>, end: Vec<u8>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            self.make_tablet(start, end)
                .await
                .map_err(|e| KvError::Unavailable(format!("creating the table's tablet: {e}")))
        })
    }

    fn split_at(&self, keys: Vec<Vec<u8>>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            for key in keys {
                self.split_once(&key)
                    .await
                    .map_err(|e| KvError::Unavailable(format!("splitting: {e:#}")))?;
            }
            Ok(())
        })
    }
}

fn read_bound(bound: TimestampBound) -> ReadBound {
    match bound {
        TimestampBound::Strong => ReadBound::Strong,
        TimestampBound::ExactStaleness(d) => ReadBound::ExactStaleness(d),
        TimestampBound::MaxStaleness(d) => ReadBound::MaxStaleness(d),
        TimestampBound::ReadTimestamp(t) => ReadBound::ReadTimestamp(t),
        TimestampBound::MinReadTimestamp(t) => ReadBound::MinReadTimestamp(t),
    }
}

/// The transaction layer's errors as SQL sees them.
pub fn kv_error(e: TxnError) -> KvError {
    match e {
        TxnError::Aborted(reason) => KvError::Aborted(format!("{reason:?}")),
        TxnError::Unavailable(reason) => KvError::Unavailable(reason),
        TxnError::Indeterminate(reason) => KvError::Indeterminate(reason),
        other => KvError::Failed(other.to_string()),
    }
}

/// A read-write transaction.
#[derive(Debug)]
struct ReadWrite {
    txn: Transaction<'static>,
    client: Arc<TxnClient>,
}

impl Kv for ReadWrite {
    fn get<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.txn.read(key).await.map_err(kv_error) })
    }

    /// A strong lock-free read (LastTS at the catalog tablet's leader when nothing is
    /// prepared there): the newest committed schema, without making the catalog's tablet a
    /// participant of this transaction's commit.
    fn get_schema<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let (mut values, _) = self.client.strong_read(&[key]).await.map_err(kv_error)?;
            Ok(values.pop().flatten())
        })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a [u8],
        end: &'a [u8],
        limit: usize,
    ) -> KvFuture<'a, Vec<(Vec<u8>, Vec<u8>)>> {
        Box::pin(async move {
            self.txn
                .scan(KeyRange::new(start, end), limit)
                .await
                .map_err(kv_error)
        })
    }

    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        commit_ts_at: Vec<usize>,
    ) -> Result<(), KvError> {
        let slots = commit_ts_at
            .into_iter()
            .map(|at| u32::try_from(at).map_err(|_| KvError::Failed("value too large".into())))
            .collect::<Result<Vec<u32>, _>>()?;
        self.txn.write_stamped(key, value, slots);
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), KvError> {
        self.txn.delete(key);
        Ok(())
    }
}

impl KvTxn for ReadWrite {
    fn commit(self: Box<Self>) -> KvFuture<'static, Option<Timestamp>> {
        let mut txn = self.txn;
        Box::pin(async move {
            match txn.commit().await {
                Ok(ts) => Ok(Some(ts)),
                // It may have committed: leave it to the coordinator's outcome.
                Err(e @ TxnError::Indeterminate(_)) => Err(kv_error(e)),
                Err(e) => {
                    txn.abort().await;
                    Err(kv_error(e))
                }
            }
        })
    }

    fn rollback(self: Box<Self>) -> KvFuture<'static, ()> {
        let txn = self.txn;
        Box::pin(async move {
            txn.abort().await;
            Ok(())
        })
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        None
    }

    fn priority(&self) -> Option<TxnPriority> {
        let p = self.txn.priority();
        Some(TxnPriority {
            first_start: p.first_start,
            tiebreak: p.tiebreak,
        })
    }
}

/// A read-only transaction.
#[derive(Debug)]
struct ReadOnly(ReadOnlyTxn<'static>);

impl Kv for ReadOnly {
    fn get<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.0.read(key).await.map_err(kv_error) })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a [u8],
        end: &'a [u8],
        limit: usize,
    ) -> KvFuture<'a, Vec<(Vec<u8>, Vec<u8>)>> {
        Box::pin(async move {
            self.0
                .scan(KeyRange::new(start, end), limit)
                .await
                .map_err(kv_error)
        })
    }

    fn put(&mut self, _: Vec<u8>, _: Vec<u8>, _: Vec<usize>) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }

    fn delete(&mut self, _: Vec<u8>) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }
}

impl KvTxn for ReadOnly {
    fn commit(self: Box<Self>) -> KvFuture<'static, Option<Timestamp>> {
        Box::pin(async { Ok(None) })
    }

    fn rollback(self: Box<Self>) -> KvFuture<'static, ()> {
        Box::pin(async { Ok(()) })
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        self.0.read_ts()
    }

    fn priority(&self) -> Option<TxnPriority> {
        None
    }
}
