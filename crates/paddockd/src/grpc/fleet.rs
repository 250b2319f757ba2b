//! `paddock.v1.Fleet`: a node's status (for the router) and, on a router,
//! its nodes and their drain flags.

use std::sync::Arc;

use paddock_proto::v1::fleet_server::Fleet;
use paddock_proto::v1::{
    DrainNodeRequest, GetNodeStatusRequest, ListNodesRequest, ListNodesResponse, NodeInfo, NodeStatus,
};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::status;
use crate::core::Paddock;

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

    async fn list_nodes(&self, request: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.list_nodes(&c).await.map_err(status)?))
    }

    async fn drain_node(&self, request: Request<DrainNodeRequest>) -> Result<Response<NodeInfo>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.set_draining(&c, &request.into_inner().name, true).await.map_err(status)?))
    }

    async fn undrain_node(&self, request: Request<DrainNodeRequest>) -> Result<Response<NodeInfo>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.set_draining(&c, &request.into_inner().name, false).await.map_err(status)?))
    }
}
