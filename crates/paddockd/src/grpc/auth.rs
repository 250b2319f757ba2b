//! Who is calling, from the connection and its metadata: root on the unix
//! socket needs nothing; everyone else shows a bearer token
//! (`authorization: Bearer pdk_...`) or, on TLS with `--tls-client-ca`, a
//! verified client certificate whose CN names a token; the core checks both. The caller goes
//! into the request's extensions for the service handlers.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::status;
use super::tls::TlsConnectInfo;
use crate::core::caller::{ROLE_HEADER, SUBJECT_HEADER, TENANT_HEADER};
use crate::core::{Caller, Paddock};

#[derive(Clone)]
pub struct Authenticate {
    pub core: Arc<dyn Paddock>,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = match req.metadata().get("authorization") {
            Some(value) => {
                let value = value
                    .to_str()
                    .map_err(|_| Status::unauthenticated("authorization: not valid text"))?;
                let token = value.strip_prefix("Bearer ").ok_or_else(|| {
                    Status::unauthenticated("authorization: expected \"Bearer <token>\"")
                })?;
                self.core.authenticate(token.trim()).map_err(status)?
            }
            None => match (peer_uid(&req), client_name(&req)) {
                (Some(0), _) => Caller::admin("uid:0"),
                (_, Some(name)) => self.core.authenticate_certificate(name).map_err(status)?,
                _ => {
                    return Err(Status::unauthenticated(
                        "this call needs a token (metadata authorization: Bearer <token>; `paddock token create`) or a client certificate; only root on the unix socket needs none",
                    ))
                }
            },
        };
        let caller = forwarded(&req, caller)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// A router's call names the caller it forwards for (`paddock-tenant`,
/// `paddock-role`, `paddock-subject`); the core decides whether this
/// connection's caller may do that (only a router's token may).
// tonic's interceptors answer with a `Status`, large as it is.
#[allow(clippy::result_large_err)]
fn forwarded(req: &Request<()>, caller: Caller) -> Result<Caller, Status> {
    let header = |name: &str| -> Result<Option<&str>, Status> {
        match req.metadata().get(name) {
            None => Ok(None),
            Some(v) => {
                v.to_str().map(Some).map_err(|_| Status::invalid_argument(format!("{name}: not valid text")))
            }
        }
    };
    match header(TENANT_HEADER)? {
        None => Ok(caller),
        Some(tenant) => {
            let role = header(ROLE_HEADER)?.unwrap_or("tenant");
            let subject = header(SUBJECT_HEADER)?.unwrap_or("");
            caller.on_behalf_of(tenant, role, subject).map_err(status)
        }
    }
}

/// The uid of the process at the other end of a unix-socket connection.
fn peer_uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions().get::<UdsConnectInfo>()?.peer_cred.map(|c| c.uid())
}

/// The subject CN of the client's verified TLS certificate.
fn client_name<T>(req: &Request<T>) -> Option<&str> {
    req.extensions().get::<TlsConnectInfo>()?.client_name.as_deref()
}

/// The caller the interceptor found.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("no caller on the request (a service is missing authentication)"))
}
