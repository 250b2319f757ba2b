//! The syscall lists of the sandbox filter, for x86_64 (the numbers are the
//! x86_64 ABI's; another architecture needs its own table).
//!
//! Built from Docker's default profile (moby profiles/seccomp/default.json): the
//! syscalls it allows without conditions, the ones it allows with the
//! capabilities a sandbox has (`chroot`: CAP_SYS_CHROOT; `arch_prctl` and
//! `modify_ldt` on amd64), less Paddock's stricter choices, which are in
//! [`DENIED`]. Two kinds of syscall are left off on purpose and so get ENOSYS:
//! the ones Linux added after 6.1 that no libc needs yet (cachestat, futex_wake/
//! wait/requeue, statmount, listmount, lsm_*, mseal, the *xattrat family,
//! uretprobe, open_tree_attr, file_getattr/setattr): a sandbox should not be the
//! first to exercise new kernel code, and to a program they look like an older
//! kernel; and the x86_64 entries the kernel never implemented (tuxcall, vserver,
//! epoll_ctl_old, ...).
//!
//! `clone`, `socket` and `personality` are allowed with argument checks and
//! `clone3` is answered ENOSYS: see the parent module.

/// `(name, number)` pairs from `libc::SYS_*` identifiers.
macro_rules! syscalls {
    ($($nr:ident),* $(,)?) => { &[$((stringify!($nr), libc::$nr)),*] };
}

/// Syscalls libc's tables lack (`arch/x86/entry/syscalls/syscall_64.tbl`).
pub(super) const SYS_IO_PGETEVENTS: libc::c_long = 333;
/// Shadow stacks (6.6): a glibc built with CET allocates a thread's with it.
pub(super) const SYS_MAP_SHADOW_STACK: libc::c_long = 453;

/// Allowed without conditions (besides the two above).
#[rustfmt::skip] // one line per syscall would be 300 lines
pub(super) const ALLOWED: &[(&str, libc::c_long)] = syscalls![
    SYS_accept, SYS_accept4, SYS_access, SYS_adjtimex, SYS_alarm, SYS_arch_prctl, SYS_bind, SYS_brk,
    SYS_capget, SYS_capset, SYS_chdir, SYS_chmod, SYS_chown, SYS_chroot, SYS_clock_getres, SYS_clock_gettime,
    SYS_clock_nanosleep, SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range, SYS_creat, SYS_dup,
    SYS_dup2, SYS_dup3, SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2,
    SYS_epoll_wait, SYS_eventfd, SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group,
    SYS_faccessat, SYS_faccessat2, SYS_fadvise64, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod,
    SYS_fchmodat, SYS_fchmodat2, SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr,
    SYS_flistxattr, SYS_flock, SYS_fork, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs, SYS_fsync,
    SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_futimesat, SYS_get_robust_list, SYS_get_thread_area,
    SYS_getcpu, SYS_getcwd, SYS_getdents, SYS_getdents64, SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups,
    SYS_getitimer, SYS_getpeername, SYS_getpgid, SYS_getpgrp, SYS_getpid, SYS_getppid, SYS_getpriority,
    SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_getrlimit, SYS_getrusage, SYS_getsid, SYS_getsockname,
    SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr, SYS_inotify_add_watch,
    SYS_inotify_init, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel, SYS_io_destroy, SYS_io_getevents,
    SYS_io_setup, SYS_io_submit, SYS_ioctl, SYS_ioprio_get, SYS_ioprio_set, SYS_kill, SYS_landlock_add_rule,
    SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lchown, SYS_lgetxattr, SYS_link, SYS_linkat,
    SYS_listen, SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr, SYS_lstat,
    SYS_madvise, SYS_membarrier, SYS_memfd_create, SYS_memfd_secret, SYS_mincore, SYS_mkdir, SYS_mkdirat,
    SYS_mknod, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap, SYS_modify_ldt, SYS_mprotect,
    SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend, SYS_mq_unlink,
    SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync, SYS_munlock, SYS_munlockall,
    SYS_munmap, SYS_nanosleep, SYS_newfstatat, SYS_open, SYS_openat, SYS_openat2, SYS_pause, SYS_pidfd_open,
    SYS_pidfd_send_signal, SYS_pipe, SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect, SYS_poll,
    SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2, SYS_prlimit64, SYS_process_mrelease,
    SYS_pselect6, SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_read, SYS_readahead, SYS_readlink,
    SYS_readlinkat, SYS_readv, SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr,
    SYS_rename, SYS_renameat, SYS_renameat2, SYS_restart_syscall, SYS_rmdir, SYS_rseq, SYS_rt_sigaction,
    SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo, SYS_rt_sigreturn, SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
    SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam, SYS_sched_getscheduler,
    SYS_sched_rr_get_interval, SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam,
    SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_select, SYS_semctl, SYS_semget, SYS_semop,
    SYS_semtimedop, SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_set_robust_list,
    SYS_set_thread_area, SYS_set_tid_address, SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups,
    SYS_setitimer, SYS_setpgid, SYS_setpriority, SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid,
    SYS_setrlimit, SYS_setsid, SYS_setsockopt, SYS_setuid, SYS_setxattr, SYS_shmat, SYS_shmctl, SYS_shmdt,
    SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd, SYS_signalfd4, SYS_socketpair, SYS_splice,
    SYS_stat, SYS_statfs, SYS_statx, SYS_symlink, SYS_symlinkat, SYS_sync, SYS_sync_file_range, SYS_syncfs,
    SYS_sysinfo, SYS_tee, SYS_tgkill, SYS_time, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun,
    SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime,
    SYS_times, SYS_tkill, SYS_truncate, SYS_umask, SYS_uname, SYS_unlink, SYS_unlinkat, SYS_utime,
    SYS_utimensat, SYS_utimes, SYS_vfork, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev,
];

/// Known syscalls that no sandboxed process may make: EPERM, as a process that
/// lacks the privilege would get. Each is either off Docker's list or one where
/// Paddock is stricter than Docker (marked "Docker allows").
#[rustfmt::skip] // grouped by reason
pub(super) const DENIED: &[(&str, libc::c_long)] = syscalls![
    // Mounts, namespaces and the root: the ways out of the sandbox's view.
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_unshare, SYS_setns, SYS_fsopen, SYS_fsconfig, SYS_fsmount,
    SYS_fspick, SYS_open_tree, SYS_move_mount, SYS_mount_setattr,
    // Kernel attack surface with a long exploit record: io_uring (Docker also
    // denies it now), eBPF, userfaultfd (race widening), perf, the key store.
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_bpf, SYS_userfaultfd,
    SYS_perf_event_open, SYS_keyctl, SYS_add_key, SYS_request_key,
    // Reaching into other processes. Docker allows ptrace and process_vm_*
    // on kernels from 4.8; a sandbox has no debugger to serve.
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_process_madvise, SYS_pidfd_getfd, SYS_kcmp,
    // File handles: open_by_handle_at is the "shocker" escape; Docker allows
    // name_to_handle_at, which leaks inode identities across mounts.
    SYS_name_to_handle_at, SYS_open_by_handle_at,
    // Host-wide state: modules, kexec, reboot, clocks, swap, quotas, accounting,
    // the kernel log, hostname (the UTS namespace is set up by the runtime).
    // Docker allows clock_adjtime, which without CAP_SYS_TIME only reads.
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load, SYS_kexec_file_load, SYS_reboot,
    SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_swapon, SYS_swapoff, SYS_quotactl,
    SYS_quotactl_fd, SYS_acct, SYS_syslog, SYS_sethostname, SYS_setdomainname, SYS_vhangup,
    SYS_lookup_dcookie, SYS_fanotify_init,
    // Raw hardware and NUMA placement.
    SYS_ioperm, SYS_iopl, SYS_mbind, SYS_get_mempolicy, SYS_set_mempolicy, SYS_set_mempolicy_home_node,
    SYS_migrate_pages, SYS_move_pages,
    // Obsolete interfaces.
    SYS__sysctl, SYS_sysfs, SYS_uselib, SYS_ustat, SYS_nfsservctl,
];
