//! Who is calling: every core operation takes a [`Caller`] first. Front ends
//! make one from the connection and its credentials (see grpc/auth.rs); the
//! core checks it in its one lookup of each session and environment, so no
//! front end can forget the check.

/// The tenant of objects made before tenants existed, and of the operator.
pub const DEFAULT_TENANT: &str = "default";

pub fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and manages every tenant's objects and the tokens (root on the
    /// unix socket, or an admin token).
    Admin,
    /// Sees only its own tenant's objects.
    Tenant,
    /// A fleet's router (a token made with `--router`): by itself it sees no
    /// tenant's objects and may only read the node's status; it acts for the
    /// tenant its call names ([`Caller::on_behalf_of`]), which it
    /// authenticated with tokens of its own.
    Router,
}

/// The metadata in which a router names the caller it forwards for. A node
/// honours them only on calls made with a router's token.
pub const TENANT_HEADER: &str = "paddock-tenant";
pub const ROLE_HEADER: &str = "paddock-role";
pub const SUBJECT_HEADER: &str = "paddock-subject";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Owner of what this caller makes.
    pub tenant: String,
    /// Who, for logs: `uid:0`, `token:NAME`.
    pub subject: String,
    pub role: Role,
    /// Named by a router (`on_behalf_of`): what only a router may ask for
    /// (an environment's id) is allowed.
    pub forwarded: bool,
}

impl Caller {
    pub fn admin(subject: impl Into<String>) -> Self {
        Self { tenant: default_tenant(), subject: subject.into(), role: Role::Admin, forwarded: false }
    }

    pub fn tenant(tenant: impl Into<String>, subject: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), subject: subject.into(), role: Role::Tenant, forwarded: false }
    }

    /// A router, acting for nobody yet.
    pub fn router(subject: impl Into<String>) -> Self {
        // No tenant is named so: a router's own caller owns nothing and sees nothing.
        Self { tenant: String::new(), subject: subject.into(), role: Role::Router, forwarded: false }
    }

    /// The caller a router forwards for: only a router may name one, so a
    /// tenant's token cannot stand for another tenant by sending the headers.
    /// `role` is `admin` or `tenant`, as the router authenticated the client.
    pub fn on_behalf_of(&self, tenant: &str, role: &str, subject: &str) -> super::Result<Caller> {
        if self.role != Role::Router {
            return Err(super::Error::permission_denied(format!(
                "{TENANT_HEADER}: only a router's token may name a tenant (this call's is {})",
                self.subject
            )));
        }
        let subject = format!("{}>{subject}", self.subject);
        match role {
            "admin" => Ok(Caller { tenant: tenant.into(), subject, role: Role::Admin, forwarded: true }),
            "tenant" if !tenant.is_empty() => Ok(Caller { forwarded: true, ..Caller::tenant(tenant, subject) }),
            _ => Err(super::Error::invalid_argument(format!(
                "{ROLE_HEADER}: {role:?} with tenant {tenant:?}: expected admin, or tenant with a tenant named"
            ))),
        }
    }

    pub fn is_router(&self) -> bool {
        self.role == Role::Router
    }

    /// How a router forwards this caller: the `paddock-role` value.
    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Admin => "admin",
            Role::Tenant => "tenant",
            Role::Router => "router",
        }
    }

    /// The daemon itself (TTL expiry, recovery).
    pub fn daemon() -> Self {
        Self::admin("paddockd")
    }

    /// Whether an object of `owner` exists for this caller. Another tenant's
    /// object does not: the caller gets NOT_FOUND, as for an unknown id.
    pub fn sees(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.tenant == owner
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_see_their_own_and_admins_see_all() {
        let a = Caller::tenant("a", "token:a");
        assert!(a.sees("a"));
        assert!(!a.sees("b"));
        assert!(!a.sees(DEFAULT_TENANT));
        assert!(Caller::admin("uid:0").sees("b"));
    }

    #[test]
    fn only_a_router_names_the_tenant() {
        let r = Caller::router("token:r");
        assert!(!r.sees("a") && !r.sees(DEFAULT_TENANT));
        let b = r.on_behalf_of("b", "tenant", "token:bee").unwrap();
        assert_eq!((b.tenant.as_str(), b.is_admin(), b.subject.as_str()), ("b", false, "token:r>token:bee"));
        assert!(r.on_behalf_of("default", "admin", "uid:0").unwrap().is_admin());
        assert!(r.on_behalf_of("", "tenant", "x").is_err());
        assert!(r.on_behalf_of("b", "router", "x").is_err());
        let a = Caller::tenant("a", "token:a");
        assert_eq!(
            a.on_behalf_of("b", "tenant", "x").unwrap_err().code(),
            super::super::Code::PermissionDenied
        );
        assert!(Caller::admin("uid:0").on_behalf_of("b", "tenant", "x").is_err());
    }
}
