//! `paddock.v1.Tokens`: API tokens, for admins.

use std::sync::Arc;

use paddock_proto::v1::tokens_server::Tokens;
use paddock_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, DeleteTokenRequest, DeleteTokenResponse, ListTokensRequest,
    ListTokensResponse,
};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::status;
use crate::core::Paddock;

pub struct TokensApi {
    pub core: Arc<dyn Paddock>,
}

#[tonic::async_trait]
impl Tokens for TokensApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.create_token(&c, request.into_inner()).map_err(status)?))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.core.list_tokens(&c).map_err(status)?))
    }

    async fn delete_token(
        &self,
        request: Request<DeleteTokenRequest>,
    ) -> Result<Response<DeleteTokenResponse>, Status> {
        let c = caller(&request)?;
        self.core.delete_token(&c, &request.into_inner().name).map_err(status)?;
        Ok(Response::new(DeleteTokenResponse {}))
    }
}
