//! Moves money between two accounts in a read-write transaction and checks, in a read-only
//! one, that the total did not change.
//!
//! Needs a running node: `MERIDIAN_URL=http://127.0.0.1:26257 cargo run -p client --example bank`.
#![allow(clippy::print_stdout)]

use client::{Client, Code, Error, TimestampBound, params};

const ACCOUNTS: i64 = 2;
const INITIAL_BALANCE: i64 = 100;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("MERIDIAN_URL").unwrap_or_else(|_| "http://127.0.0.1:26257".into());
    let client = Client::connect(&url).await?;
    create_accounts(&client).await?;

    let (from, to, amount) = (1i64, 2i64, 10i64);
    let transfer = client
        .read_write(|tx| async move {
            let row = tx
                .query_one("SELECT balance FROM accounts WHERE id = $1", &params![from])
                .await?;
            let balance = row.get(0).and_then(|v| v.as_i64()).unwrap_or(0);
            if balance < amount {
                return Err(Error::user(format!("account {from} has only {balance}")));
            }
            let row = tx
                .query_one("SELECT balance FROM accounts WHERE id = $1", &params![to])
                .await?;
            let other = row.get(0).and_then(|v| v.as_i64()).unwrap_or(0);
            let columns = ["id", "balance"];
            tx.update(
                "accounts",
                &["id"],
                &columns,
                params![from, balance - amount].to_vec(),
            )
            .await?;
            tx.update(
                "accounts",
                &["id"],
                &columns,
                params![to, other + amount].to_vec(),
            )
            .await?;
            Ok(balance - amount)
        })
        .await?;
    println!(
        "moved {amount} from account {from} to {to}: {from} now has {}; committed at {} ns \
         after {} attempt(s)",
        transfer.value, transfer.commit_ts, transfer.attempts
    );

    let total = client
        .read_only(TimestampBound::Strong, |tx| async move {
            let rows = tx.query("SELECT balance FROM accounts", &[]).await?;
            Ok(rows
                .iter()
                .filter_map(|r| r.get(0).and_then(|v| v.as_i64()))
                .sum::<i64>())
        })
        .await?;
    println!(
        "total balance {total} (expected {})",
        ACCOUNTS * INITIAL_BALANCE
    );
    Ok(())
}

/// Creates the table and its accounts unless they exist.
async fn create_accounts(client: &Client) -> Result<(), Error> {
    let created = client
        .sql(
            "CREATE TABLE accounts (id INT64 NOT NULL PRIMARY KEY, balance INT64 NOT NULL)",
            &[],
        )
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.code() == Code::DuplicateTable => return Ok(()),
        Err(e) => return Err(e),
    }
    client
        .read_write(|tx| async move {
            for id in 1..=ACCOUNTS {
                let values = params![id, INITIAL_BALANCE].to_vec();
                tx.upsert("accounts", &["id"], &["id", "balance"], values)
                    .await?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}
