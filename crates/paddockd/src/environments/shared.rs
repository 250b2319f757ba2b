//! Environments an admin shares with every tenant (`shared`): any tenant's
//! sessions may run on one and any tenant may read it; only its own tenant
//! (or an admin) changes, builds or deletes it. An operator makes a
//! template once for all (E2B's `base` and `code-interpreter-v1` are such),
//! instead of once per tenant.

use super::{EnvironmentManager, EnvironmentRecord};
use crate::core::caller::Caller;
use crate::core::error::{Code, Error};

impl EnvironmentManager {
    /// The lookup for using an environment (a session on it, reading it):
    /// the caller's own, by name or id (see `get`), else a shared one. A
    /// name of the caller's own tenant wins over a shared one.
    pub async fn get_usable(&self, caller: &Caller, key: &str) -> Result<EnvironmentRecord, Error> {
        let err = match self.get(caller, key).await {
            Err(e) if e.code() == Code::NotFound => e,
            r => return r,
        };
        let records = self.records.lock().await;
        if let Some(r) = records.get(key).filter(|r| r.shared) {
            return Ok(r.clone());
        }
        let named: Vec<_> = records.values().filter(|r| r.shared && r.name == key).collect();
        match named.as_slice() {
            [r] => Ok((*r).clone()),
            [] => Err(err),
            _ => Err(Error::invalid_argument(format!(
                "environment: {key:?} names shared environments of {} tenants; use the id",
                named.len()
            ))),
        }
    }

    /// Sharing decides what every tenant may use: an admin's call.
    pub fn check_share(caller: &Caller) -> Result<(), Error> {
        match caller.is_admin() {
            true => Ok(()),
            false => {
                Err(Error::permission_denied("shared: only an admin shares an environment with every tenant"))
            }
        }
    }

    pub async fn set_shared(
        &self,
        caller: &Caller,
        id: &str,
        shared: bool,
    ) -> Result<EnvironmentRecord, Error> {
        Self::check_share(caller)?;
        self.set_field(id, |r| r.shared = shared).await
    }
}
