//! `paddock.v1.Events`: the core's life-cycle events as a server stream.

use std::sync::Arc;

use paddock_proto::v1::events_server::Events;
use paddock_proto::v1::{Event, WatchEventsRequest};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{grpc_stream, status, GrpcStream};
use crate::core::Paddock;

pub struct EventsApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Events for EventsApi {
    type WatchEventsStream = GrpcStream<Event>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let c = caller(&request)?;
        let events = self.core.watch_events(&c, request.into_inner().id).await.map_err(status)?;
        Ok(Response::new(grpc_stream(events)))
    }
}
