//! The bank workload: accounts in one table, transfers between them in read-write
//! transactions, and read-only transactions that read every balance.
//!
//! The invariant: a transfer is atomic and moves money without creating or destroying any,
//! and never takes an account below zero, so every consistent read of all balances sums to
//! the initial total and shows no negative balance. A read that breaks this saw a torn
//! transaction, a lost update or a snapshot that is not one; the checker
//! ([`checker::bank`]) reports it. A transfer whose commit ended `indeterminate` applied
//! wholly or not at all, so it cannot break the invariant either: reads still must sum to
//! the total.
//!
//! [`init`] creates and loads the table; [`run`] drives the load and checks every read.

mod run;

use anyhow::Context as _;
use client::{Client, ClientOptions, Code, TimestampBound};

pub use run::{ReadPath, RunOptions, Stop, run};

/// The bank table's definition.
pub const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS bank (id INT64 PRIMARY KEY, balance INT64 NOT NULL)";

/// The transfer log: every transfer inserts its id here in its own transaction, so after a
/// run every acknowledged transfer must be found, and an indeterminate one at most once.
pub const LOG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bank_log \
    (id INT64 PRIMARY KEY, from_id INT64 NOT NULL, to_id INT64 NOT NULL, moved INT64 NOT NULL)";

/// Rows per INSERT statement when loading.
const LOAD_BATCH_ROWS: u64 = 100;

/// Options of `meridian workload bank init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Node addresses, tried in order.
    pub urls: Vec<String>,
    /// Accounts to create, with ids `0..accounts`.
    pub accounts: u64,
    /// Money in the bank, spread as evenly as integers allow.
    pub total: i64,
    /// Drop an existing `bank` table first.
    pub reset: bool,
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialized {
    /// The table was created and loaded.
    Loaded,
    /// The table already held that many accounts with that total: left as it was.
    AlreadyThere,
}

/// The opening balance of account `id` of `accounts` sharing `total`: the remainder goes to
/// the first accounts, one each.
pub fn opening_balance(id: u64, accounts: u64, total: i64) -> i64 {
    let accounts_i = i64::try_from(accounts.max(1)).unwrap_or(i64::MAX);
    let extra = u64::try_from(total % accounts_i).unwrap_or(0);
    total / accounts_i + i64::from(id < extra)
}

/// Creates the `bank` table and loads its accounts.
///
/// An existing table with the same number of accounts and the same total is left alone (it
/// is a bank that has been used); one with other contents is an error unless `reset`.
pub async fn init(options: &InitOptions) -> anyhow::Result<Initialized> {
    anyhow::ensure!(
        options.accounts >= 2,
        "--accounts must be at least 2 (a transfer needs two accounts)"
    );
    anyhow::ensure!(options.total >= 0, "--total must not be negative");
    let client = Client::connect_with(&options.urls, ClientOptions::default()).await?;
    if options.reset {
        client
            .sql("DROP TABLE IF EXISTS bank", &[])
            .await
            .context("dropping the bank table")?;
        client
            .sql("DROP TABLE IF EXISTS bank_log", &[])
            .await
            .context("dropping the transfer log")?;
    }
    client
        .sql(SCHEMA, &[])
        .await
        .context("creating the bank table")?;
    client
        .sql(LOG_SCHEMA, &[])
        .await
        .context("creating the transfer log")?;
    let (count, sum) = count_and_total(&client).await?;
    if count == options.accounts && sum == options.total {
        return Ok(Initialized::AlreadyThere);
    }
    anyhow::ensure!(
        count == 0,
        "table bank already holds {count} accounts totalling {sum}, not {} totalling {}: \
         pass --reset to drop it and load a new bank",
        options.accounts,
        options.total
    );
    load(&client, options).await?;
    Ok(Initialized::Loaded)
}

/// The number of rows of `bank` and the sum of their balances, read strongly.
async fn count_and_total(client: &Client) -> anyhow::Result<(u64, i64)> {
    let result = client
        .read(
            "SELECT COUNT(*), SUM(balance) FROM bank",
            &[],
            TimestampBound::Strong,
        )
        .await
        .context("reading the bank table (is `bank` a table of another shape? --reset drops it)")?;
    let row = result.first();
    let count = row.and_then(|r| r.get(0)).and_then(|v| v.as_i64());
    let sum = row.and_then(|r| r.get(1)).and_then(|v| v.as_i64());
    Ok((
        u64::try_from(count.unwrap_or(0)).unwrap_or(0),
        sum.unwrap_or(0),
    ))
}

/// Inserts every account, in multi-row INSERTs of [`LOAD_BATCH_ROWS`] rows.
async fn load(client: &Client, options: &InitOptions) -> anyhow::Result<()> {
    let mut first = 0;
    while first < options.accounts {
        let last = (first + LOAD_BATCH_ROWS).min(options.accounts);
        let rows: Vec<String> = (first..last)
            .map(|id| {
                let balance = opening_balance(id, options.accounts, options.total);
                format!("({id}, {balance})")
            })
            .collect();
        let sql = format!("INSERT INTO bank (id, balance) VALUES {}", rows.join(", "));
        client.sql(&sql, &[]).await.with_context(|| {
            format!("loading accounts {first}..{last} (a partial bank remains: rerun with --reset)")
        })?;
        first = last;
    }
    Ok(())
}

/// Every balance in account order, and the timestamp the read ran at.
pub(crate) async fn read_balances(
    client: &Client,
    bound: TimestampBound,
) -> Result<(Vec<i64>, Option<u64>), client::Error> {
    client
        .read_only(bound, |tx| async move {
            let result = tx.sql("SELECT balance FROM bank ORDER BY id", &[]).await?;
            let balances = result
                .rows
                .iter()
                .map(|row| {
                    row.get(0).and_then(|v| v.as_i64()).ok_or_else(|| {
                        client::Error::user("a balance that is not an INT64 in table bank")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((balances, result.read_ts))
        })
        .await
}

/// Whether `e` says the bank table is not there.
pub(crate) fn is_missing_table(e: &client::Error) -> bool {
    e.code() == Code::UndefinedTable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_balances_spread_the_total_evenly() {
        let balances: Vec<i64> = (0..3).map(|id| opening_balance(id, 3, 100)).collect();
        assert_eq!(balances, [34, 33, 33]);
        let total: i64 = (0..7).map(|id| opening_balance(id, 7, 100_000)).sum();
        assert_eq!(total, 100_000);
        assert_eq!(opening_balance(0, 4, 0), 0);
    }
}
