//! The bank invariant: money is neither created nor destroyed, and never goes negative.

/// What a bank history got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankViolation {
    /// A read of every account did not sum to the total.
    WrongTotal {
        /// Index of the read in the history.
        read: usize,
        /// What it summed to.
        sum: i64,
    },
    /// A read saw a negative balance.
    Negative {
        /// Index of the read in the history.
        read: usize,
        /// The account.
        account: usize,
    },
}

/// Checks every read of all balances against `total`.
pub fn check(reads: &[Vec<i64>], total: i64) -> Vec<BankViolation> {
    let mut violations = Vec::new();
    for (read, balances) in reads.iter().enumerate() {
        let sum = balances.iter().sum::<i64>();
        if sum != total {
            violations.push(BankViolation::WrongTotal { read, sum });
        }
        for (account, balance) in balances.iter().enumerate() {
            if *balance < 0 {
                violations.push(BankViolation::Negative { read, account });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_totals_and_negative_balances_are_reported() {
        let reads = vec![vec![50, 50], vec![60, 50], vec![-1, 101]];
        assert_eq!(
            check(&reads, 100),
            vec![
                BankViolation::WrongTotal { read: 1, sum: 110 },
                BankViolation::Negative {
                    read: 2,
                    account: 0
                }
            ]
        );
        assert!(check(&[vec![100, 0]], 100).is_empty());
    }
}
