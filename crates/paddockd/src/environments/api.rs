//! The public gRPC service `paddock.v1.Environments`: protocol messages to and
//! from the environment manager.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use paddock_proto::v1::environments_server::Environments;
use paddock_proto::v1::{
    BuildEnvironmentRequest, BuildEvent, BuildState, CreateEnvironmentRequest, DeleteEnvironmentRequest,
    DeleteEnvironmentResponse, Environment, ExportEnvironmentRequest, ExportEnvironmentResponse,
    GetEnvironmentRequest, ImportEnvironmentRequest, ListEnvironmentsRequest, ListEnvironmentsResponse,
    Packages as PbPackages, UpdateEnvironmentRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::packages::Packages;
use super::{Base, EnvironmentManager, EnvironmentRecord};
use crate::network::policy::PolicySpec;
use crate::sessions::SessionManager;

pub struct EnvironmentsApi {
    pub envs: Arc<EnvironmentManager>,
    pub sessions: Arc<SessionManager>,
}

fn packages(p: Option<PbPackages>) -> Packages {
    let p = p.unwrap_or_default();
    Packages { apt: p.apt, cargo: p.cargo, gem: p.gem, go: p.go, npm: p.npm, pip: p.pip }
}

fn network(p: Option<&paddock_proto::v1::NetworkPolicy>) -> Result<Option<PolicySpec>, Status> {
    p.map(|p| PolicySpec::from_proto(p, "network")).transpose()
}

fn absolute(field: &str, dir: &str) -> Result<PathBuf, Box<Status>> {
    if dir.starts_with('/') {
        Ok(PathBuf::from(dir))
    } else {
        Err(Box::new(Status::invalid_argument(format!("{field}: {dir:?} must be an absolute host path"))))
    }
}

#[tonic::async_trait]
impl Environments for EnvironmentsApi {
    async fn create_environment(
        &self,
        request: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let r = request.into_inner();
        let env: BTreeMap<_, _> = r.env.into_iter().collect();
        let network = network(r.network.as_ref())?;
        let record = self
            .envs
            .create(
                r.name,
                r.description,
                packages(r.packages),
                env,
                Base::Daemon,
                network,
                r.allow_privilege_escalation,
            )
            .await?;
        tracing::info!(id = %record.id, name = %record.name, "environment created");
        Ok(Response::new(self.to_proto(&record)))
    }

    async fn get_environment(
        &self,
        request: Request<GetEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let record = self.envs.get(&request.into_inner().environment).await?;
        Ok(Response::new(self.to_proto(&record)))
    }

    async fn list_environments(
        &self,
        _: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsResponse>, Status> {
        let environments = self.envs.list().await.iter().map(|r| self.to_proto(r)).collect();
        Ok(Response::new(ListEnvironmentsResponse { environments }))
    }

    async fn update_environment(
        &self,
        request: Request<UpdateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let r = request.into_inner();
        let env = r.update_env.then(|| r.env.into_iter().collect());
        let pk = r.packages.map(|p| packages(Some(p)));
        let network = network(r.network.as_ref())?;
        let record = self
            .envs
            .update(&r.environment, pk, env, r.description, network, r.allow_privilege_escalation)
            .await?;
        Ok(Response::new(self.to_proto(&record)))
    }

    async fn delete_environment(
        &self,
        request: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteEnvironmentResponse>, Status> {
        let key = request.into_inner().environment;
        self.sessions.delete_environment(&self.envs, &key).await?;
        Ok(Response::new(DeleteEnvironmentResponse {}))
    }

    type BuildEnvironmentStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BuildEvent, Status>> + Send>>;

    async fn build_environment(
        &self,
        request: Request<BuildEnvironmentRequest>,
    ) -> Result<Response<Self::BuildEnvironmentStream>, Status> {
        let rx = self.envs.build(&request.into_inner().environment).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn export_environment(
        &self,
        request: Request<ExportEnvironmentRequest>,
    ) -> Result<Response<ExportEnvironmentResponse>, Status> {
        let r = request.into_inner();
        let dir = absolute("directory", &r.directory).map_err(|e| *e)?;
        let manifest_digest = self.envs.export(&r.environment, &dir).await?;
        Ok(Response::new(ExportEnvironmentResponse { manifest_digest }))
    }

    async fn import_environment(
        &self,
        request: Request<ImportEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let r = request.into_inner();
        let dir = absolute("directory", &r.directory).map_err(|e| *e)?;
        let env: BTreeMap<_, _> = r.env.into_iter().collect();
        let record = self.envs.import(r.name, &dir, &r.reference, packages(r.packages), env).await?;
        Ok(Response::new(self.to_proto(&record)))
    }
}

impl EnvironmentsApi {
    fn to_proto(&self, r: &EnvironmentRecord) -> Environment {
        let base = self.envs.resolve_base(&r.base).ok();
        let current = base.as_ref().and_then(|(rootfs, _)| r.current_image(rootfs));
        let state = if self.envs.is_building(&r.id) {
            BuildState::Building
        } else if current.is_some() {
            BuildState::Ready
        } else if r.build_error.is_some() {
            BuildState::Failed
        } else {
            BuildState::NotBuilt
        };
        let p = &r.packages;
        Environment {
            id: r.id.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            packages: Some(PbPackages {
                apt: p.apt.clone(),
                cargo: p.cargo.clone(),
                gem: p.gem.clone(),
                go: p.go.clone(),
                npm: p.npm.clone(),
                pip: p.pip.clone(),
            }),
            network: r.network.as_ref().map(|p| p.to_proto()),
            allow_privilege_escalation: r.allow_privilege_escalation,
            env: r.env.clone().into_iter().collect(),
            state: state as i32,
            layers: current.map(|i| self.envs.image_layers(i)).unwrap_or_default(),
            build_error: r.build_error.clone().unwrap_or_default(),
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            imported_base: match &r.base {
                Base::Imported { digest } => format!("sha256:{digest}"),
                Base::Daemon => String::new(),
            },
        }
    }
}
