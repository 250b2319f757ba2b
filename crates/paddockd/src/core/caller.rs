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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Owner of what this caller makes.
    pub tenant: String,
    /// Who, for logs: `uid:0`, `token:NAME`.
    pub subject: String,
    pub role: Role,
}

impl Caller {
    pub fn admin(subject: impl Into<String>) -> Self {
        Self { tenant: default_tenant(), subject: subject.into(), role: Role::Admin }
    }

    pub fn tenant(tenant: impl Into<String>, subject: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), subject: subject.into(), role: Role::Tenant }
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
}
