use std::collections::HashMap;

use super::*;

/// Runs the filter on one syscall the way the kernel does, for the
/// instructions the compiler emits; panics on anything else.
fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &prog[pc];
        let jump = |cond: bool| pc + 1 + if cond { i.jt as usize } else { i.jf as usize };
        pc = match i.code {
            BPF_LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                pc + 1
            }
            BPF_JEQ_K => jump(acc == i.k),
            BPF_JGE_K => jump(acc >= i.k),
            BPF_JSET_K => jump(acc & i.k != 0),
            BPF_RET_K => return i.k,
            c => panic!("unexpected BPF opcode {c:#x} at {pc}"),
        };
    }
}

fn verdict(nr: libc::c_long, args: [u64; 6]) -> u32 {
    run(&compile_filter().unwrap(), AUDIT_ARCH_X86_64, nr as u32, args)
}

fn arg0(v: u64) -> [u64; 6] {
    [v, 0, 0, 0, 0, 0]
}

#[test]
fn filter_compiles_and_fits_the_kernel_limit() {
    let prog = compile_filter().unwrap();
    assert!(prog.len() <= BPF_MAXINSNS, "filter has {} instructions", prog.len());
    assert!(denied_syscall_names().any(|n| n == "mount"));
    assert!(allowed().any(|(n, _)| n == "epoll_pwait"));
}

#[test]
fn no_syscall_is_listed_twice() {
    let special = [
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("socket", libc::SYS_socket),
        ("personality", libc::SYS_personality),
    ];
    let denied = table::DENIED.iter().map(|(n, nr)| (n.trim_start_matches("SYS_"), *nr));
    let mut seen: HashMap<libc::c_long, &str> = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for (name, nr) in allowed().chain(denied).chain(special) {
        if let Some(first) = seen.insert(nr, name) {
            panic!("syscall {nr} is listed as {first} and as {name}");
        }
        assert!(names.insert(name), "{name} is listed twice");
    }
}

#[test]
fn allowed_denied_and_unknown_syscalls_get_their_answers() {
    for (name, nr) in allowed() {
        assert_eq!(verdict(nr, arg0(0)), SECCOMP_RET_ALLOW, "{name}");
    }
    for (name, nr) in table::DENIED {
        assert_eq!(verdict(*nr, arg0(0)), RET_EPERM, "{name}");
    }
    // cachestat, statmount, listmount, mseal, and numbers no kernel has yet.
    for nr in [451, 457, 458, 462, 470, 1000, 0x3fff_ffff] {
        assert_eq!(verdict(nr, arg0(0)), RET_ENOSYS, "syscall {nr}");
    }
    assert_eq!(verdict(libc::SYS_clone3, arg0(0)), RET_ENOSYS);
    // What the guest and its tools lean on.
    for name in [
        "epoll_pwait2",
        "pidfd_open",
        "rseq",
        "statx",
        "getrandom",
        "close_range",
        "faccessat2",
        "openat2",
        "membarrier",
        "pipe2",
        "waitid",
        "prlimit64",
        "inotify_add_watch",
        "copy_file_range",
    ] {
        assert!(allowed().any(|(n, _)| n == name), "{name} is not allowed");
    }
}

#[test]
fn clone_socket_and_personality_are_checked_by_argument() {
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    assert_eq!(verdict(libc::SYS_clone, arg0(thread)), SECCOMP_RET_ALLOW);
    assert_eq!(verdict(libc::SYS_clone, arg0(libc::SIGCHLD as u64)), SECCOMP_RET_ALLOW);
    for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID] {
        assert_eq!(verdict(libc::SYS_clone, arg0(flag as u64 | libc::SIGCHLD as u64)), RET_EPERM);
    }
    assert_eq!(verdict(libc::SYS_socket, arg0(libc::AF_INET as u64)), SECCOMP_RET_ALLOW);
    assert_eq!(verdict(libc::SYS_socket, arg0(libc::AF_UNIX as u64)), SECCOMP_RET_ALLOW);
    assert_eq!(verdict(libc::SYS_socket, arg0(libc::AF_ALG as u64)), RET_EPERM);
    assert_eq!(verdict(libc::SYS_socket, arg0(libc::AF_VSOCK as u64)), RET_EPERM);
    for p in ALLOWED_PERSONALITIES {
        assert_eq!(verdict(libc::SYS_personality, arg0(*p as u64)), SECCOMP_RET_ALLOW, "{p:#x}");
    }
    for p in [0x0040000u64 /* ADDR_NO_RANDOMIZE */, 0x0400000 /* READ_IMPLIES_EXEC */, 1, 0x20001] {
        assert_eq!(verdict(libc::SYS_personality, arg0(p)), RET_EPERM, "{p:#x}");
    }
}

#[test]
fn other_abis_are_refused() {
    let prog = compile_filter().unwrap();
    let x32_mount = X32_SYSCALL_BIT | libc::SYS_mount as u32;
    assert_eq!(run(&prog, AUDIT_ARCH_X86_64, x32_mount, arg0(0)), RET_EPERM);
    let x32_read = X32_SYSCALL_BIT;
    assert_eq!(run(&prog, AUDIT_ARCH_X86_64, x32_read, arg0(0)), RET_EPERM);
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    assert_eq!(run(&prog, AUDIT_ARCH_I386, 0, arg0(0)), RET_KILL);
}

/// The kernel itself accepts the filter and answers as the model above says.
#[test]
fn the_kernel_enforces_the_filter() {
    let prog = compile_filter().unwrap();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // The child makes only raw syscalls (the test binary has threads) and
    // reports the first failed check in its exit status.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe {
            let errno = || *libc::__errno_location();
            let fails_with = |rc: libc::c_long, e: i32| rc == -1 && errno() == e;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(10);
            }
            if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0 {
                libc::_exit(11);
            }
            let checks = [
                libc::syscall(libc::SYS_getpid) > 0,
                libc::syscall(libc::SYS_personality, 0xffff_ffffu64) >= 0,
                libc::syscall(libc::SYS_personality, 0) >= 0,
                fails_with(libc::syscall(libc::SYS_personality, 0x0040000), libc::EPERM),
                fails_with(libc::syscall(451 /* cachestat */, -1, 0, 0, 0, 0), libc::ENOSYS),
                fails_with(libc::syscall(458 /* listmount */, 0, 0, 0, 0), libc::ENOSYS),
                fails_with(libc::syscall(libc::SYS_io_uring_setup, 1, 0), libc::EPERM),
                fails_with(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER), libc::EPERM),
                fails_with(libc::syscall(libc::SYS_clone3, 0, 0), libc::ENOSYS),
            ];
            match checks.iter().position(|ok| !ok) {
                Some(i) => libc::_exit(20 + i as i32),
                None => libc::_exit(0),
            }
        }
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the child died: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "exit 10/11: installing failed; 20+i: check i failed");
}
