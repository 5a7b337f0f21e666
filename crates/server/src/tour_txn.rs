//! `meridian tour`, part three: a bank transfer as a two-phase-commit transaction across two
//! tablets, then a lock-free read-only transaction over both.

use std::sync::Arc;
use std::time::Instant;

use tablet::{Node, TabletId};
use truetime::Clock;
use txn::{Directory, LocalDirectory, ReadBound, ReplicaChoice, TxnClient, TxnConfig, TxnService};

fn balance(value: Option<Vec<u8>>) -> i64 {
    value
        .and_then(|v| v.try_into().ok())
        .map_or(0, i64::from_be_bytes)
}

/// Runs on `nodes` (already serving Raft to each other).
pub async fn run(
    clock: Arc<dyn Clock>,
    nodes: &[Arc<Node>],
    members: &std::collections::BTreeMap<tablet::NodeId, String>,
) -> anyhow::Result<()> {
    println!("\n5. Transactions: accounts on two tablets, two-phase commit with commit-wait");
    let (alice_tablet, bob_tablet) = (TabletId(2), TabletId(3));
    for tablet in [alice_tablet, bob_tablet] {
        for node in nodes {
            node.create_tablet(tablet).await?;
        }
        nodes[0].bootstrap(tablet, members).await?;
    }
    let directory = LocalDirectory::new(vec![
        (b"".to_vec(), alice_tablet),
        (b"bob".to_vec(), bob_tablet),
    ]);
    let shared: Arc<dyn Directory> = directory.clone();
    let services: Vec<Arc<TxnService>> = nodes
        .iter()
        .map(|node| {
            TxnService::start(
                Arc::clone(node),
                Arc::clone(&clock),
                TxnConfig::default(),
                Arc::downgrade(&shared),
            )
        })
        .collect();
    for service in &services {
        directory.register(Arc::clone(service));
    }
    let client = TxnClient::new(shared.clone(), Arc::clone(&clock), 1);
    let (_, opened) = client
        .read_write(|tx| {
            Box::pin(async move {
                tx.write(b"alice".to_vec(), 70i64.to_be_bytes().to_vec());
                tx.write(b"bob".to_vec(), 30i64.to_be_bytes().to_vec());
                Ok(())
            })
        })
        .await?;
    println!(
        "   opened alice = 70 (tablet {alice_tablet}) and bob = 30 (tablet {bob_tablet}) at {opened}"
    );
    let started = Instant::now();
    let (_, committed) = client
        .read_write(|tx| {
            Box::pin(async move {
                let alice = balance(tx.read(b"alice").await?);
                let bob = balance(tx.read(b"bob").await?);
                tx.write(b"alice".to_vec(), (alice - 25).to_be_bytes().to_vec());
                tx.write(b"bob".to_vec(), (bob + 25).to_be_bytes().to_vec());
                Ok(())
            })
        })
        .await?;
    println!(
        "   moved 25 from alice to bob: committed at {committed} in {:?} (locks, PREPARE on both, COMMIT, commit-wait)",
        started.elapsed()
    );
    for (label, bound) in [
        ("before", ReadBound::ReadTimestamp(committed.prev())),
        ("now", ReadBound::Strong),
    ] {
        let mut snapshot = client.read_only(bound, ReplicaChoice::Follower)?;
        let (alice, bob) = (
            balance(snapshot.read(b"alice").await?),
            balance(snapshot.read(b"bob").await?),
        );
        let at = snapshot.read_ts().unwrap_or(committed);
        println!(
            "   read-only at {at} ({label}, from followers, no locks): alice {alice}, bob {bob}, total {}",
            alice + bob
        );
    }
    for service in &services {
        service.stop();
    }
    Ok(())
}
