//! The sandbox's seccomp filter: an allowlist modelled on Docker's default
//! profile, compiled once (the runtime helper does it at start) and applied by
//! [`crate::executor::SandboxExecutor`] just before the sandbox's init is
//! exec'd. The guest (PID 1) and every process in the sandbox inherit it.
//!
//! What a syscall gets:
//! - allowed ([`table::ALLOWED`]): runs;
//! - denied ([`table::DENIED`], known and refused on purpose): EPERM, what a
//!   process without the privilege gets, so programs take their "not allowed"
//!   path (libuv and tokio fall back from io_uring, for example);
//! - anything else, including syscalls newer than the list: ENOSYS, so the
//!   kernel looks older than it is and libc falls back (a new syscall is not
//!   reachable until someone adds it here);
//! - `clone`: allowed unless its flags ask for a namespace (EPERM); `clone3`:
//!   ENOSYS (its flags sit in memory BPF cannot read), which makes glibc fall
//!   back to `clone`;
//! - `socket`: allowed except AF_ALG and AF_VSOCK (EPERM), as in Docker;
//! - `personality`: only the values Docker allows (query, PER_LINUX,
//!   PER_LINUX32, UNAME26 with either); others, such as ADDR_NO_RANDOMIZE or
//!   READ_IMPLIES_EXEC, EPERM;
//! - x32 syscalls (same audit arch, bit 30 set): EPERM; another audit arch
//!   (i386 via `int 0x80`): the process is killed.
//!
//! The program is written here rather than by seccompiler, whose filters have
//! one match action and one mismatch action; this needs three outcomes. The
//! kernel's per-syscall cache (Linux 5.11+) skips the filter for every syscall
//! whose answer is a constant ALLOW, so the linear list costs nothing on the
//! hot path; only `clone`, `socket` and `personality` run it, and they are
//! checked first.

#[cfg(target_arch = "x86_64")]
mod table;
#[cfg(test)]
mod tests;

use seccompiler::{sock_filter, BpfProgram};

const SECCOMP_RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// `AUDIT_ARCH_X86_64`: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 syscalls carry this bit and share AUDIT_ARCH_X86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Namespace flags `clone` may not carry: a new namespace (a user namespace
/// above all) is a way out of ours. CLONE_NEWTIME overlaps the exit signal in
/// `clone`'s flags and is reachable only through `clone3` and `unshare`.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// Socket families no sandboxed process may open.
const DENIED_SOCKET_FAMILIES: &[u32] = &[libc::AF_ALG as u32, libc::AF_VSOCK as u32];

/// The `personality` values Docker allows: 0 (PER_LINUX), 8 (PER_LINUX32),
/// 0x20000 (UNAME26), 0x20008 (UNAME26|PER_LINUX32), 0xffffffff (query).
pub const ALLOWED_PERSONALITIES: &[u32] = &[0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

// Offsets in `struct seccomp_data`; an argument's low half on a little-endian
// host. The kernel reads these arguments as 32-bit values (clone's flags
// through lower_32_bits, socket's family and personality's persona are ints),
// so the low half is exactly what it acts on.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg_low(arg: u32) -> u32 {
    16 + 8 * arg
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Compiles the sandbox filter for the host architecture.
#[cfg(target_arch = "x86_64")]
pub fn compile_filter() -> anyhow::Result<BpfProgram> {
    let mut p = vec![
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        ins(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(BPF_RET_K, 0, 0, RET_KILL),
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(BPF_RET_K, 0, 0, RET_EPERM),
    ];
    // Argument checks first: they are the only syscalls that run the filter.
    // Each block ends in a return on every path, so the number stays in A for
    // the blocks after it.
    p.extend([
        ins(BPF_JEQ_K, 0, 4, libc::SYS_clone as u32),
        ins(BPF_LD_W_ABS, 0, 0, offset_arg_low(0)),
        ins(BPF_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
        ins(BPF_RET_K, 0, 0, RET_EPERM),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]);
    p.extend(arg_in_set(libc::SYS_socket, 0, DENIED_SOCKET_FAMILIES, RET_EPERM, SECCOMP_RET_ALLOW));
    p.extend(arg_in_set(libc::SYS_personality, 0, ALLOWED_PERSONALITIES, SECCOMP_RET_ALLOW, RET_EPERM));
    p.extend(returns(libc::SYS_clone3, RET_ENOSYS));
    for (_, nr) in allowed() {
        p.extend(returns(nr, SECCOMP_RET_ALLOW));
    }
    for (_, nr) in table::DENIED {
        p.extend(returns(*nr, RET_EPERM));
    }
    p.push(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
    anyhow::ensure!(p.len() <= BPF_MAXINSNS, "seccomp: the filter has {} instructions", p.len());
    Ok(p)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn compile_filter() -> anyhow::Result<BpfProgram> {
    anyhow::bail!("seccomp: no syscall table for {}; only x86_64 has one", std::env::consts::ARCH)
}

/// `nr` → `action`; any other syscall goes on to the next instruction.
fn returns(nr: libc::c_long, action: u32) -> [sock_filter; 2] {
    [ins(BPF_JEQ_K, 0, 1, nr as u32), ins(BPF_RET_K, 0, 0, action)]
}

/// For syscall `nr`: `on_match` if argument `arg` is one of `values`, else
/// `otherwise`. Other syscalls skip the block.
fn arg_in_set(nr: libc::c_long, arg: u32, values: &[u32], on_match: u32, otherwise: u32) -> Vec<sock_filter> {
    let n = values.len();
    assert!(n < 250, "jump offsets are 8 bits");
    let mut p =
        vec![ins(BPF_JEQ_K, 0, (n + 3) as u8, nr as u32), ins(BPF_LD_W_ABS, 0, 0, offset_arg_low(arg))];
    // From the i-th comparison, `on_match` is n - i instructions further on.
    p.extend(values.iter().enumerate().map(|(i, v)| ins(BPF_JEQ_K, (n - i) as u8, 0, *v)));
    p.push(ins(BPF_RET_K, 0, 0, otherwise));
    p.push(ins(BPF_RET_K, 0, 0, on_match));
    p
}

/// The syscalls allowed without argument checks, with their numbers.
#[cfg(target_arch = "x86_64")]
pub fn allowed() -> impl Iterator<Item = (&'static str, libc::c_long)> {
    let extra = [
        ("SYS_io_pgetevents", table::SYS_IO_PGETEVENTS),
        ("SYS_map_shadow_stack", table::SYS_MAP_SHADOW_STACK),
    ];
    table::ALLOWED.iter().copied().chain(extra).map(|(name, nr)| (name.trim_start_matches("SYS_"), nr))
}

/// Names of the syscalls denied with EPERM, for documentation and tests.
#[cfg(target_arch = "x86_64")]
pub fn denied_syscall_names() -> impl Iterator<Item = &'static str> {
    table::DENIED.iter().map(|(name, _)| name.trim_start_matches("SYS_"))
}
