/* escape-probe: tries one way out of a sandbox and reports whether the kernel
 * allowed it. Built statically by the test harness and placed in the test image.
 * usage: escape-probe ATTEMPT ; exit 0 = the attempt SUCCEEDED, 1 = denied. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif

static int report(const char *name, long rc) {
    if (rc < 0) {
        printf("%s: denied (%s)\n", name, strerror(errno));
        return 1;
    }
    printf("%s: ALLOWED\n", name);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: escape-probe ATTEMPT\n"); return 2; }
    const char *a = argv[1];
    long rc;
    if (!strcmp(a, "mount")) rc = mount("none", "/mnt", "tmpfs", 0, NULL);
    else if (!strcmp(a, "umount")) rc = umount2("/proc", MNT_DETACH);
    else if (!strcmp(a, "unshare-user")) rc = unshare(CLONE_NEWUSER);
    else if (!strcmp(a, "unshare-net")) rc = unshare(CLONE_NEWNET);
    else if (!strcmp(a, "unshare-mnt")) rc = unshare(CLONE_NEWNS);
    else if (!strcmp(a, "setns")) {
        int fd = open("/proc/1/ns/mnt", O_RDONLY);
        rc = fd < 0 ? fd : setns(fd, 0);
    } else if (!strcmp(a, "ptrace")) {
        pid_t child = fork();
        if (child == 0) { pause(); _exit(0); }
        rc = ptrace(PTRACE_ATTACH, child, 0, 0);
        int e = errno;
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        errno = e;
    } else if (!strcmp(a, "init_module")) rc = syscall(SYS_init_module, "", 0, "");
    else if (!strcmp(a, "finit_module")) {
        int fd = open("/dev/null", O_RDONLY);
        rc = syscall(SYS_finit_module, fd, "", 0);
    } else if (!strcmp(a, "kexec_load")) rc = syscall(SYS_kexec_load, 0, 0, 0, 0);
    else if (!strcmp(a, "bpf")) rc = syscall(SYS_bpf, 0, 0, 0);
    else if (!strcmp(a, "keyctl")) rc = syscall(SYS_keyctl, 0, 0, 0, 0, 0);
    else if (!strcmp(a, "add_key")) rc = syscall(SYS_add_key, "user", "x", "y", 1, -2);
    else if (!strcmp(a, "perf_event_open")) rc = syscall(SYS_perf_event_open, 0, 0, -1, -1, 0);
    else if (!strcmp(a, "userfaultfd")) rc = syscall(SYS_userfaultfd, 0);
    else if (!strcmp(a, "io_uring_setup")) {
        char params[120] = {0};
        rc = syscall(425, 1, params);
    } else if (!strcmp(a, "clone-newns")) {
        rc = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
        if (rc == 0) _exit(0);
        if (rc > 0) waitpid(rc, NULL, 0);
    } else if (!strcmp(a, "clone3-newuser")) {
        uint64_t args[11] = {0};
        args[0] = CLONE_NEWUSER;
        args[4] = SIGCHLD; /* exit_signal */
        rc = syscall(435, args, sizeof(args));
        if (rc == 0) _exit(0);
        if (rc > 0) waitpid(rc, NULL, 0);
    } else if (!strcmp(a, "x32-mount")) rc = syscall(0x40000000 | SYS_mount, "none", "/mnt", "tmpfs", 0, 0);
    else if (!strcmp(a, "mknod-block")) rc = mknod("/tmp/escape-blk", S_IFBLK | 0600, makedev(8, 0));
    else if (!strcmp(a, "read-kcore")) {
        int fd = open("/proc/kcore", O_RDONLY);
        char b[16];
        rc = fd < 0 ? fd : read(fd, b, sizeof b);
        if (rc == 0) { errno = ENODATA; rc = -1; }
    } else if (!strcmp(a, "write-proc-sys")) rc = open("/proc/sys/kernel/hostname", O_WRONLY);
    else if (!strcmp(a, "write-sysrq")) rc = open("/proc/sysrq-trigger", O_WRONLY);
    else if (!strcmp(a, "write-sys")) rc = open("/sys/kernel/mm/ksm/run", O_WRONLY);
    else if (!strcmp(a, "socket-alg")) rc = socket(AF_ALG, SOCK_SEQPACKET, 0);
    else if (!strcmp(a, "sethostname")) rc = sethostname("escaped", 7);
    /* personality: ADDR_NO_RANDOMIZE turns off ASLR; Docker's values only. */
    else if (!strcmp(a, "personality-no-aslr")) rc = syscall(SYS_personality, 0x0040000);
    else if (!strcmp(a, "personality-linux")) rc = syscall(SYS_personality, 0);
    else if (!strcmp(a, "personality-query")) rc = syscall(SYS_personality, 0xffffffffUL);
    /* Syscalls newer than the allowlist, by number (6.5, 6.8, 6.10): this
     * kernel has them, so ENOSYS comes from the filter. mseal(0, 0, 0) would
     * succeed without it. */
    else if (!strcmp(a, "cachestat")) rc = syscall(451, -1, 0, 0, 0);
    else if (!strcmp(a, "listmount")) rc = syscall(458, 0, 0, 0, 0);
    else if (!strcmp(a, "mseal")) rc = syscall(462, 0, 0, 0);
    else { fprintf(stderr, "unknown attempt %s\n", a); return 2; }
    return report(a, rc);
}
