//! The time master: a gRPC [`TimeService`] answering with its clock's interval.

use std::future::Future;
use std::sync::Arc;

use proto::v1::time_service_server::{TimeService, TimeServiceServer};
use proto::v1::{NowRequest, NowResponse};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use truetime::Clock;

/// Answers `Now` with the interval of the master's reference clock. A master's clock is
/// trusted by definition (a GPS receiver or an atomic clock in Spanner; here, usually a
/// [`truetime::FixedEpsilonClock`] over a disciplined system clock).
#[derive(Debug, Clone)]
pub struct TimeMaster {
    clock: Arc<dyn Clock>,
}

impl TimeMaster {
    /// A master answering from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        TimeMaster { clock }
    }

    /// The gRPC service, to add to a tonic server.
    pub fn into_service(self) -> TimeServiceServer<TimeMaster> {
        TimeServiceServer::new(self)
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
    }
}

#[tonic::async_trait]
impl TimeService for TimeMaster {
    #[tracing::instrument(level = "trace", skip_all)]
    async fn now(&self, _request: Request<NowRequest>) -> Result<Response<NowResponse>, Status> {
        // Read as late as possible: the client's round trip bounds how stale this is.
        let interval = self
            .clock
            .now()
            .map_err(|e| Status::unavailable(format!("time master cannot bound its time: {e}")))?;
        Ok(Response::new(NowResponse {
            earliest_ns: interval.earliest.as_nanos(),
            latest_ns: interval.latest.as_nanos(),
        }))
    }
}
