//! The public gRPC service `paddock.v1.Environments`: the caller and the
//! request into the core, the core's answer back.

use std::sync::Arc;

use paddock_proto::v1::environments_server::Environments;
use paddock_proto::v1::{
    BuildEnvironmentRequest, BuildEvent, CreateEnvironmentRequest, DeleteEnvironmentRequest,
    DeleteEnvironmentResponse, Environment, ExportEnvironmentRequest, ExportEnvironmentResponse,
    GetEnvironmentRequest, ImportEnvironmentRequest, ListEnvironmentsRequest, ListEnvironmentsResponse,
    UpdateEnvironmentRequest,
};
use paddock_proto::v1::{CollectGarbageRequest, CollectGarbageResponse};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::{grpc_stream, status, GrpcStream};
use crate::core::Paddock;

pub struct EnvironmentsApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Environments for EnvironmentsApi {
    async fn create_environment(
        &self,
        request: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.create_environment(&c, request.into_inner()).await.map_err(status)?))
    }

    async fn get_environment(
        &self,
        request: Request<GetEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let c = caller(&request)?;
        let key = request.into_inner().environment;
        Ok(Response::new(self.core.get_environment(&c, &key).await.map_err(status)?))
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(ListEnvironmentsResponse { environments: self.core.list_environments(&c).await }))
    }

    async fn update_environment(
        &self,
        request: Request<UpdateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.update_environment(&c, request.into_inner()).await.map_err(status)?))
    }

    async fn delete_environment(
        &self,
        request: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteEnvironmentResponse>, Status> {
        let c = caller(&request)?;
        self.core.delete_environment(&c, &request.into_inner().environment).await.map_err(status)?;
        Ok(Response::new(DeleteEnvironmentResponse {}))
    }

    type BuildEnvironmentStream = GrpcStream<BuildEvent>;

    async fn build_environment(
        &self,
        request: Request<BuildEnvironmentRequest>,
    ) -> Result<Response<Self::BuildEnvironmentStream>, Status> {
        let c = caller(&request)?;
        let key = request.into_inner().environment;
        Ok(Response::new(grpc_stream(self.core.build_environment(&c, &key).await.map_err(status)?)))
    }

    async fn export_environment(
        &self,
        request: Request<ExportEnvironmentRequest>,
    ) -> Result<Response<ExportEnvironmentResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.export_environment(&c, request.into_inner()).await.map_err(status)?))
    }

    async fn import_environment(
        &self,
        request: Request<ImportEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.import_environment(&c, request.into_inner()).await.map_err(status)?))
    }

    async fn collect_garbage(
        &self,
        request: Request<CollectGarbageRequest>,
    ) -> Result<Response<CollectGarbageResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.collect_garbage(&c, request.into_inner()).await.map_err(status)?))
    }
}
