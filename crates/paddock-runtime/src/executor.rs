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
        let nnp = spec.process().as_ref().and_then(|p| p.no_new_privileges()).unwrap_or(false);
        if nnp {
            seccompiler::apply_filter(&self.filter)
                .map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        } else {
            install_keeping_privileges(&self.filter)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Installs the filter without setting no_new_privs (seccompiler always sets
/// it). The kernel then asks for CAP_SYS_ADMIN (of the sandbox's user
/// namespace): spec.rs gives it in the effective set only, not in the
/// bounding set, so the exec of the guest right after drops it.
fn install_keeping_privileges(filter: &BpfProgram) -> Result<(), ExecutorError> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| ExecutorError::Other("seccomp filter too long".into()))?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog)
    };
    if rc != 0 {
        return Err(ExecutorError::Other(format!(
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
