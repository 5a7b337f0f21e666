//! What a lock covers, and which locks conflict.

use std::fmt;

/// Shared locks are taken on what a transaction reads, exclusive ones on what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// Compatible with other shared locks.
    Shared,
    /// Compatible with nothing.
    Exclusive,
}

impl LockMode {
    /// Whether two locks in these modes, held by different transactions, conflict.
    pub fn conflicts_with(self, other: LockMode) -> bool {
        self == LockMode::Exclusive || other == LockMode::Exclusive
    }

    /// Whether holding `self` already grants what `wanted` asks for.
    pub fn covers(self, wanted: LockMode) -> bool {
        self == LockMode::Exclusive || wanted == LockMode::Shared
    }
}

/// A key, or a half-open key range `[start, end)` (`end: None` is unbounded) for scans.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockTarget {
    /// One key.
    Key(Vec<u8>),
    /// Every key in `[start, end)`, including keys not yet written (phantoms).
    Range {
        /// First key covered.
        start: Vec<u8>,
        /// First key not covered; `None` for no upper bound.
        end: Option<Vec<u8>>,
    },
}

impl LockTarget {
    /// A key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        LockTarget::Key(key.into())
    }

    /// The range `[start, end)`.
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        LockTarget::Range {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    fn bounds(&self) -> (&[u8], Option<&[u8]>) {
        match self {
            // A key is the range [key, key ++ 0x00): nothing sorts between them.
            LockTarget::Key(key) => (key, None),
            LockTarget::Range { start, end } => (start, end.as_deref()),
        }
    }

    /// Whether the two targets share at least one key.
    pub fn overlaps(&self, other: &LockTarget) -> bool {
        match (self, other) {
            (LockTarget::Key(a), LockTarget::Key(b)) => a == b,
            (LockTarget::Key(k), range @ LockTarget::Range { .. })
            | (range @ LockTarget::Range { .. }, LockTarget::Key(k)) => range.contains(k),
            (LockTarget::Range { .. }, LockTarget::Range { .. }) => {
                let (a_start, a_end) = self.bounds();
                let (b_start, b_end) = other.bounds();
                a_end.is_none_or(|end| b_start < end) && b_end.is_none_or(|end| a_start < end)
            }
        }
    }

    /// Whether `key` is covered.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            LockTarget::Key(k) => k.as_slice() == key,
            LockTarget::Range { start, end } => {
                key >= start.as_slice() && end.as_deref().is_none_or(|end| key < end)
            }
        }
    }

    /// Whether every key of `other` is covered by `self`.
    pub fn covers(&self, other: &LockTarget) -> bool {
        match (self, other) {
            (_, LockTarget::Key(k)) => self.contains(k),
            (LockTarget::Key(_), LockTarget::Range { .. }) => false,
            (LockTarget::Range { start, end }, LockTarget::Range { start: s, end: e }) => {
                s >= start
                    && match (end, e) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(end), Some(e)) => e <= end,
                    }
            }
        }
    }
}

impl fmt::Debug for LockTarget {
    /// Keys print as escaped ASCII: the lock table's traces and tests read them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |k: &[u8]| k.escape_ascii().to_string();
        match self {
            LockTarget::Key(k) => write!(f, "{}", show(k)),
            LockTarget::Range {
                start,
                end: Some(end),
            } => write!(f, "[{}, {})", show(start), show(end)),
            LockTarget::Range { start, end: None } => write!(f, "[{}, ∞)", show(start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_cover() {
        let range = LockTarget::range("b", "d");
        assert!(range.overlaps(&LockTarget::key("c")));
        assert!(range.overlaps(&LockTarget::key("b")));
        assert!(!range.overlaps(&LockTarget::key("d")));
        assert!(range.overlaps(&LockTarget::range("c", "z")));
        assert!(!range.overlaps(&LockTarget::range("d", "z")));
        let unbounded = LockTarget::Range {
            start: b"x".to_vec(),
            end: None,
        };
        assert!(unbounded.overlaps(&LockTarget::range("a", "y")));
        assert!(!unbounded.overlaps(&LockTarget::range("a", "x")));
        assert!(range.covers(&LockTarget::range("b", "c")));
        assert!(!range.covers(&LockTarget::range("a", "c")));
        assert!(!LockTarget::key("c").covers(&range));
        assert!(LockMode::Exclusive.covers(LockMode::Shared));
        assert!(!LockMode::Shared.covers(LockMode::Exclusive));
    }
}
