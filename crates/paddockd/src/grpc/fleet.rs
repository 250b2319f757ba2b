//! `paddock.v1.Fleet`: a node's status (for the router) and, on a router,
//! its nodes and their drain flags.

use std::sync::Arc;

use paddock_proto::v1::fleet_server::Fleet;
use paddock_proto::v1::{
    CheckSessionTokenRequest, DrainNodeRequest, ExportLayersRequest, GetNodeStatusRequest,
    ImportLayersResponse, LayerChunk, ListNodesRequest, ListNodesResponse, NodeInfo, NodeStatus,
    SessionToken, SessionTokenCaller, SessionTokenRequest,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::auth::caller;
use super::{grpc_stream, status, GrpcStream};
use crate::core::Paddock;
use crate::core::{Error, LayerChunks};

pub struct FleetApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Fleet for FleetApi {
    async fn get_node_status(
        &self,
        request: Request<GetNodeStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.node_status(&c).await.map_err(status)?))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.list_nodes(&c).await.map_err(status)?))
    }

    async fn drain_node(&self, request: Request<DrainNodeRequest>) -> Result<Response<NodeInfo>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.set_draining(&c, &request.into_inner().name, true).await.map_err(status)?))
    }

    async fn undrain_node(&self, request: Request<DrainNodeRequest>) -> Result<Response<NodeInfo>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(
            self.core.set_draining(&c, &request.into_inner().name, false).await.map_err(status)?,
        ))
    }

    type ExportLayersStream = GrpcStream<LayerChunk>;

    async fn export_layers(
        &self,
        request: Request<ExportLayersRequest>,
    ) -> Result<Response<Self::ExportLayersStream>, Status> {
        let c = caller(&request)?;
        let id = request.into_inner().environment_id;
        Ok(Response::new(grpc_stream(self.core.export_layers(&c, &id).await.map_err(status)?)))
    }

    async fn import_layers(
        &self,
        request: Request<Streaming<LayerChunk>>,
    ) -> Result<Response<ImportLayersResponse>, Status> {
        let c = caller(&request)?;
        let chunks = LayerChunks::new(request.into_inner().map(|r| r.map_err(Error::from)));
        Ok(Response::new(self.core.import_layers(&c, chunks).await.map_err(status)?))
    }

    async fn get_session_token(
        &self,
        request: Request<SessionTokenRequest>,
    ) -> Result<Response<SessionToken>, Status> {
        let c = caller(&request)?;
        let token = self.core.session_token(&c, &request.into_inner().session_id).await.map_err(status)?;
        Ok(Response::new(SessionToken { token }))
    }

    async fn check_session_token(
        &self,
        request: Request<CheckSessionTokenRequest>,
    ) -> Result<Response<SessionTokenCaller>, Status> {
        // The router asks for the E2B front end it serves; a client checks
        // its token by using it, so nobody else needs this oracle.
        if !caller(&request)?.is_router() {
            return Err(Status::permission_denied(
                "CheckSessionToken is the fleet router's (its token only)",
            ));
        }
        let r = request.into_inner();
        let c = self.core.authenticate_session(&r.session_id, &r.token).await.map_err(status)?;
        Ok(Response::new(SessionTokenCaller { tenant: c.tenant }))
    }
}
