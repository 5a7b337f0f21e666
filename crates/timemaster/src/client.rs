//! Asking a set of time masters for the time, and syncing a [`SyncedClock`] from them.

use std::time::Duration;

use futures_util::future::join_all;
use proto::v1::NowRequest;
use proto::v1::time_service_client::TimeServiceClient;
use tonic::transport::{Channel, Endpoint};
use truetime::{MasterReading, SyncOutcome, SyncedClock, Timestamp, TtInterval};

/// Why a sync with the masters failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncFailure {
    /// A master address does not parse.
    #[error("bad time master address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Too few usable answers, or they disagree.
    #[error(transparent)]
    Sync(#[from] truetime::SyncError),
}

/// The time masters a node syncs from.
#[derive(Debug, Clone)]
pub struct TimeMasters {
    masters: Vec<(String, TimeServiceClient<Channel>)>,
    timeout: Duration,
    samples: usize,
}

/// Exchanges per master per sync: Cristian's bound is tightest for the fastest round trip,
/// and the first exchange on a new connection also pays for the TCP and HTTP/2 handshakes.
const SAMPLES_PER_MASTER: usize = 3;

impl TimeMasters {
    /// Masters at `addresses` (`http://host:port`), each asked with `timeout`. Connections are
    /// made lazily, so masters that are down now may answer later.
    pub fn new(addresses: &[String], timeout: Duration) -> Result<Self, SyncFailure> {
        let masters = addresses
            .iter()
            .map(|address| {
                let endpoint = Endpoint::from_shared(address.clone())
                    .map_err(|e| SyncFailure::BadAddress {
                        address: address.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                Ok((
                    address.clone(),
                    TimeServiceClient::new(endpoint.connect_lazy()),
                ))
            })
            .collect::<Result<_, SyncFailure>>()?;
        Ok(TimeMasters {
            masters,
            timeout,
            samples: SAMPLES_PER_MASTER,
        })
    }

    /// How many masters there are.
    pub fn len(&self) -> usize {
        self.masters.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// Asks every master at once, stamping each exchange with `clock`'s oscillator, and keeps
    /// each master's reading with the shortest round trip. Masters that fail or answer
    /// nonsense are left out (and logged).
    pub async fn probe(&self, clock: &SyncedClock) -> Vec<MasterReading> {
        let asks = self.masters.iter().map(|(address, client)| async move {
            let mut best: Option<MasterReading> = None;
            for _ in 0..self.samples {
                let Some(reading) = self.ask(address, client.clone(), clock).await else {
                    break;
                };
                let rtt = |r: &MasterReading| r.received_nanos.saturating_sub(r.sent_nanos);
                if best.as_ref().is_none_or(|b| rtt(&reading) < rtt(b)) {
                    best = Some(reading);
                }
            }
            best
        });
        join_all(asks).await.into_iter().flatten().collect()
    }

    async fn ask(
        &self,
        address: &str,
        mut client: TimeServiceClient<Channel>,
        clock: &SyncedClock,
    ) -> Option<MasterReading> {
        let sent_nanos = clock.oscillator_nanos();
        let reply = tokio::time::timeout(self.timeout, client.now(NowRequest {})).await;
        let received_nanos = clock.oscillator_nanos();
        if received_nanos < sent_nanos {
            // The oscillator went back during the exchange: the reading bounds nothing.
            tracing::warn!(%address, "the local oscillator went back during a time exchange; reading ignored");
            return None;
        }
        let reply = match reply {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!(%address, %status, "time master refused");
                return None;
            }
            Err(_) => {
                tracing::debug!(%address, "time master timed out");
                return None;
            }
        };
        let master = TtInterval::new(
            Timestamp::from_nanos(reply.earliest_ns),
            Timestamp::from_nanos(reply.latest_ns),
        );
        if master.is_none() {
            tracing::warn!(%address, "time master sent an inverted interval; ignored");
        }
        master.map(|master| MasterReading {
            sent_nanos,
            received_nanos,
            master,
        })
    }

    /// Probes the masters and applies their answers to `clock`.
    pub async fn sync(&self, clock: &SyncedClock) -> Result<SyncOutcome, SyncFailure> {
        let readings = self.probe(clock).await;
        Ok(clock.apply_readings(&readings)?)
    }
}
