//! The libcontainer Executor that every Paddock sandbox init goes through: it
//! applies the precompiled seccomp filter, then hands over to libcontainer's
//! default exec. It runs in the container's init after capabilities are dropped.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use seccompiler::BpfProgram;

#[derive(Clone)]
pub struct SandboxExecutor {
    /// Compiled in the parent so the forked child only installs it.
    filter: BpfProgram,
}

impl SandboxExecutor {
    pub fn new(filter: BpfProgram) -> Self {
        Self { filter }
    }
}

impl Executor for SandboxExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        seccompiler::apply_filter(&self.filter)
            .map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
