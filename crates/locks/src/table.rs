//! [`LockTable`]: shared and exclusive locks on keys and key ranges, wait queues, and
//! wound-wait deadlock avoidance.
//!
//! # Wound-wait
//!
//! Every transaction has a [`Priority`]: the start time of its first attempt (retries keep
//! it). When a request conflicts with a lock held by a younger transaction, the requester
//! *wounds* the holder (the driver aborts it, which releases its locks) and waits; when it
//! conflicts with an older holder, it just waits. Waits therefore only ever point from
//! younger to older transactions, or at a transaction that is already being aborted, so no
//! cycle can form: there are no deadlocks to detect.
//!
//! Two refinements:
//! - A transaction that has prepared (2PC) keeps its locks when wounded: it has promised to
//!   commit if told to. The table asks for its abort instead ([`Event::AskToAbort`]); its
//!   coordinator aborts it unless it already committed, and the waiter gets the lock when
//!   the outcome is applied. (A prepared transaction may still be acquiring locks at another
//!   participant, so simply waiting for it could close a cycle.)
//! - Waiters are served oldest first, and a request never overtakes an older waiter it
//!   conflicts with. A stream of young transactions therefore cannot starve an old one, and a
//!   retried transaction, keeping its first attempt's priority, eventually becomes the oldest.
//!
//! # Shape
//!
//! A plain state machine: requests in ([`LockTable::acquire`], [`LockTable::release`]),
//! decisions out ([`Event`]s: grants and wounds). No clock, no awaits, no I/O; the tablet
//! leader's driver turns events into replies and aborts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use truetime::Timestamp;

use crate::{LockMode, LockTarget};

/// A transaction attempt.
#[derive(
    Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TxnId(pub u64);

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn{}", self.0)
    }
}

/// Age for wound-wait: smaller is older and wins. Fixed at a transaction's first attempt.
#[derive(
    Debug, Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Priority {
    /// When the first attempt started.
    pub first_start: Timestamp,
    /// Breaks ties: the first attempt's id.
    pub tiebreak: u64,
}

/// Identifies one [`LockTable::acquire`] call.
#[derive(Debug, Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A decision for the driver to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A waiting request now holds its lock.
    Granted {
        /// The transaction.
        txn: TxnId,
        /// Its request.
        request: RequestId,
    },
    /// `txn` must abort (and then [`LockTable::release`] its locks): an older transaction
    /// needs one of them.
    Wounded {
        /// The victim.
        txn: TxnId,
        /// The older transaction that wounded it.
        by: TxnId,
    },
    /// `txn` holds a lock an older transaction needs but has prepared here, so its locks
    /// stay until its outcome: ask its coordinator to abort it if it has not committed yet.
    /// (Without this, a prepared transaction still acquiring locks at another participant
    /// could wait for the older one while the older one waits for it.)
    AskToAbort {
        /// The prepared, younger transaction.
        txn: TxnId,
        /// The older transaction that needs its lock.
        by: TxnId,
    },
}

/// What [`LockTable::acquire`] decided for the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is held.
    Granted(RequestId),
    /// The request waits; an [`Event::Granted`] for it will follow.
    Waiting(RequestId),
    /// The transaction has been wounded: abort it instead of locking more.
    Wounded {
        /// Who wounded it.
        by: TxnId,
    },
}

#[derive(Debug)]
struct TxnState {
    priority: Priority,
    held: Vec<(LockTarget, LockMode)>,
    prepared: bool,
    wounded_by: Option<TxnId>,
}

#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    pub(crate) txn: TxnId,
    pub(crate) target: LockTarget,
    pub(crate) mode: LockMode,
}

/// The locks of one tablet leader.
#[derive(Debug, Default)]
pub struct LockTable {
    txns: HashMap<TxnId, TxnState>,
    /// Point locks by key.
    points: BTreeMap<Vec<u8>, Vec<(TxnId, LockMode)>>,
    /// Range locks.
    ranges: Vec<(TxnId, LockTarget, LockMode)>,
    /// Waiting requests, oldest transaction first, then arrival order.
    pub(crate) waiting: BTreeMap<(Priority, RequestId), Waiter>,
}

/// Request ids are unique in the process, not just in one table: a node replaces a tablet's
/// table when leadership changes, and a grant still on its way from the old table must not
/// match a waiter of the new one.
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl LockTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for `mode` on `target` for `txn`. Returns the decision for this request and the
    /// events it caused (wounds of younger holders).
    pub fn acquire(
        &mut self,
        txn: TxnId,
        priority: Priority,
        target: LockTarget,
        mode: LockMode,
    ) -> (Acquire, Vec<Event>) {
        let state = self.txns.entry(txn).or_insert_with(|| TxnState {
            priority,
            held: Vec::new(),
            prepared: false,
            wounded_by: None,
        });
        if let Some(by) = state.wounded_by {
            return (Acquire::Wounded { by }, Vec::new());
        }
        let priority = state.priority;
        let request = RequestId(NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        if self.holds(txn, &target, mode) {
            return (Acquire::Granted(request), Vec::new());
        }
        let holders = self.conflicting_holders(txn, &target, mode);
        let blocked =
            !holders.is_empty() || self.conflicts_with_older_waiter(txn, priority, &target, mode);
        if !blocked {
            self.grant(txn, target, mode);
            return (Acquire::Granted(request), Vec::new());
        }
        let events = self.wound_younger(txn, priority, &holders);
        self.waiting
            .insert((priority, request), Waiter { txn, target, mode });
        (Acquire::Waiting(request), events)
    }

    /// Marks `txn` prepared: from now on it is never wounded.
    pub fn set_prepared(&mut self, txn: TxnId) {
        if let Some(state) = self.txns.get_mut(&txn) {
            state.prepared = true;
        }
    }

    /// Marks `txn` as committing (prepared) before it logs its commit or prepare, so that no
    /// wound can strip its locks while that is in flight. Fails with the wounder if it was
    /// already wounded, or with `None` if it holds no locks here (they were released).
    pub fn try_set_prepared(&mut self, txn: TxnId) -> Result<(), Option<TxnId>> {
        let state = self.txns.get_mut(&txn).ok_or(None)?;
        if let Some(by) = state.wounded_by {
            return Err(Some(by));
        }
        state.prepared = true;
        Ok(())
    }

    /// Releases every lock `txn` holds and cancels its waiting requests (at commit, abort, or
    /// when its client vanished). Returns the grants this makes possible.
    pub fn release(&mut self, txn: TxnId) -> Vec<Event> {
        let Some(state) = self.txns.remove(&txn) else {
            return Vec::new();
        };
        for (target, _) in state.held {
            match target {
                LockTarget::Key(key) => {
                    if let Some(holders) = self.points.get_mut(&key) {
                        holders.retain(|(t, _)| *t != txn);
                        if holders.is_empty() {
                            self.points.remove(&key);
                        }
                    }
                }
                LockTarget::Range { .. } => self.ranges.retain(|(t, _, _)| *t != txn),
            }
        }
        self.waiting.retain(|_, w| w.txn != txn);
        self.grant_waiters()
    }

    /// The locks `txn` holds.
    pub fn held_by(&self, txn: TxnId) -> Vec<(LockTarget, LockMode)> {
        self.txns
            .get(&txn)
            .map(|s| s.held.clone())
            .unwrap_or_default()
    }

    /// The transactions whose locks block `mode` on `target` for `txn` (for diagnostics).
    pub fn blockers(&self, txn: TxnId, target: &LockTarget, mode: LockMode) -> Vec<TxnId> {
        self.conflicting_holders(txn, target, mode)
    }

    /// How many requests are waiting.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    fn holds(&self, txn: TxnId, target: &LockTarget, mode: LockMode) -> bool {
        self.txns.get(&txn).is_some_and(|s| {
            s.held
                .iter()
                .any(|(t, m)| t.covers(target) && m.covers(mode))
        })
    }

    /// Other transactions holding locks that conflict with `mode` on `target`.
    pub(crate) fn conflicting_holders(
        &self,
        txn: TxnId,
        target: &LockTarget,
        mode: LockMode,
    ) -> Vec<TxnId> {
        let mut holders: Vec<TxnId> = Vec::new();
        let mut consider = |holder: TxnId, held: LockMode| {
            if holder != txn && held.conflicts_with(mode) && !holders.contains(&holder) {
                holders.push(holder);
            }
        };
        match target {
            LockTarget::Key(key) => {
                for &(holder, held) in self.points.get(key).into_iter().flatten() {
                    consider(holder, held);
                }
            }
            LockTarget::Range { start, end } => {
                let keys = self.points.range(start.clone()..);
                for (_, list) in keys.take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e)) {
                    for &(holder, held) in list {
                        consider(holder, held);
                    }
                }
            }
        }
        for (holder, range, held) in &self.ranges {
            if range.overlaps(target) {
                consider(*holder, *held);
            }
        }
        holders
    }

    fn conflicts_with_older_waiter(
        &self,
        txn: TxnId,
        priority: Priority,
        target: &LockTarget,
        mode: LockMode,
    ) -> bool {
        self.waiting
            .iter()
            .take_while(|((p, _), _)| *p < priority)
            .any(|(_, w)| w.txn != txn && w.mode.conflicts_with(mode) && w.target.overlaps(target))
    }

    fn wound_younger(&mut self, txn: TxnId, priority: Priority, holders: &[TxnId]) -> Vec<Event> {
        let mut events = Vec::new();
        for holder in holders {
            let Some(state) = self.txns.get_mut(holder) else {
                continue;
            };
            if state.priority > priority && state.wounded_by.is_none() {
                state.wounded_by = Some(txn);
                // A prepared holder keeps its locks: only its coordinator can abort it.
                events.push(match state.prepared {
                    false => Event::Wounded {
                        txn: *holder,
                        by: txn,
                    },
                    true => Event::AskToAbort {
                        txn: *holder,
                        by: txn,
                    },
                });
            }
        }
        events
    }

    fn grant(&mut self, txn: TxnId, target: LockTarget, mode: LockMode) {
        match &target {
            LockTarget::Key(key) => self
                .points
                .entry(key.clone())
                .or_default()
                .push((txn, mode)),
            LockTarget::Range { .. } => self.ranges.push((txn, target.clone(), mode)),
        }
        if let Some(state) = self.txns.get_mut(&txn) {
            state.held.push((target, mode));
        }
    }

    /// Grants, oldest first, every waiter that conflicts with no holder and no older waiter.
    fn grant_waiters(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut still_waiting: Vec<Waiter> = Vec::new();
        let queue: Vec<((Priority, RequestId), Waiter)> =
            self.waiting.iter().map(|(k, w)| (*k, w.clone())).collect();
        for ((priority, request), waiter) in queue {
            let behind = still_waiting.iter().any(|w| {
                w.txn != waiter.txn
                    && w.mode.conflicts_with(waiter.mode)
                    && w.target.overlaps(&waiter.target)
            });
            let holders = self.conflicting_holders(waiter.txn, &waiter.target, waiter.mode);
            if behind || !holders.is_empty() {
                events.extend(self.wound_younger(waiter.txn, priority, &holders));
                still_waiting.push(waiter);
                continue;
            }
            self.waiting.remove(&(priority, request));
            self.grant(waiter.txn, waiter.target, waiter.mode);
            events.push(Event::Granted {
                txn: waiter.txn,
                request,
            });
        }
        events
    }
}
