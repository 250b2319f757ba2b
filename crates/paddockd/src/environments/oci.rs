//! OCI image layouts: export of a built environment, import as a base.

use std::collections::BTreeMap;
use std::path::Path;

use tonic::Status;

use super::packages::Packages;
use super::{EnvironmentManager, EnvironmentRecord};

impl EnvironmentManager {
    pub async fn export(&self, _key: &str, _dir: &Path) -> Result<String, Status> {
        Err(Status::unimplemented("export is not built yet"))
    }

    pub async fn import(
        &self,
        _name: String,
        _dir: &Path,
        _reference: &str,
        _packages: Packages,
        _env: BTreeMap<String, String>,
    ) -> Result<EnvironmentRecord, Status> {
        Err(Status::unimplemented("import is not built yet"))
    }
}
