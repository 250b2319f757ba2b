//! `paddock.v1.Events`: the core's life-cycle events as a server stream.

use std::sync::Arc;

use paddock_proto::v1::events_server::Events;
use paddock_proto::v1::{Event, WatchEventsRequest};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{grpc_stream, GrpcStream};
use crate::core::Core;

pub struct EventsApi {
    pub core: Arc<Core>,
}

#[tonic::async_trait]
impl Events for EventsApi {
    type WatchEventsStream = GrpcStream<Event>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(grpc_stream(self.core.watch_events(&c, request.into_inner().id))))
    }
}
