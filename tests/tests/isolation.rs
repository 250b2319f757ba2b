//! What a session can see of the host and of other sessions: nothing.

use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn session_is_confined_and_unprivileged() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, None).await;

    let id_out = sh_ok(&mut c, &s.id, "id").await;
    assert!(id_out.starts_with("uid=0(root)"), "{id_out}");
    assert_eq!(sh_ok(&mut c, &s.id, "hostname").await.trim(), s.id, "hostname is the session id");

    let status = sh_ok(&mut c, &s.id, "cat /proc/self/status").await;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
    };
    assert_eq!(field("Seccomp"), "2", "seccomp filter mode");
    assert_eq!(field("NoNewPrivs"), "1");
    let cap_eff = u64::from_str_radix(&field("CapEff"), 16).unwrap();
    let host_caps = u64::from_str_radix(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    // Docker's default set is 0xa80425fb; ours is that less MKNOD and NET_RAW.
    const DOCKER_DEFAULT: u64 = 0xa80425fb;
    assert_eq!(cap_eff & !DOCKER_DEFAULT, 0, "CapEff {cap_eff:#x} exceeds Docker's default set");
    assert!(cap_eff < host_caps, "CapEff {cap_eff:#x} is not reduced from the host's {host_caps:#x}");
    for (bit, name) in [(21, "CAP_SYS_ADMIN"), (27, "CAP_MKNOD"), (13, "CAP_NET_RAW"), (16, "CAP_SYS_MODULE")]
    {
        assert_eq!(cap_eff & (1 << bit), 0, "{name} is in CapEff");
    }

    // Only the session's own processes: the guest (pid 1), the shell, ps.
    let ps = sh_ok(&mut c, &s.id, "ps -o pid,comm").await;
    let pids: Vec<&str> = ps.lines().skip(1).collect();
    assert!(pids.len() <= 3, "unexpected processes:\n{ps}");
    assert!(ps.contains("paddock-guest"), "{ps}");
    assert!(!ps.contains("paddockd"), "host processes visible:\n{ps}");

    // Host files are invisible.
    let marker = format!("/tmp/paddock-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let r = sh(&mut c, &s.id, &format!("cat {marker}")).await;
    std::fs::remove_file(&marker).unwrap();
    assert_ne!(r.exit_code, Some(0), "a host file is readable in the sandbox");
    assert!(sh_ok(&mut c, &s.id, "ls /").await.lines().all(|l| l != "work"), "host / leaked");

    // Network, mode none (the default): loopback up; the link to the host
    // (eth0) down, so there is no route at all (tests/tests/network.rs has more).
    let links = sh_ok(&mut c, &s.id, "ls /sys/class/net").await;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), vec!["eth0", "lo"], "interfaces: {links}");
    assert_eq!(sh_ok(&mut c, &s.id, "cat /sys/class/net/eth0/operstate").await.trim(), "down");
    let routes = sh_ok(&mut c, &s.id, "cat /proc/net/route").await;
    assert_eq!(routes.lines().count(), 1, "routes in mode none: {routes}");
    let lo = sh_ok(&mut c, &s.id, "cat /sys/class/net/lo/operstate; ip -o addr show lo").await;
    assert!(lo.contains("127.0.0.1"), "{lo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_private_to_their_session() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let a = create(&mut c, None).await;
    let b = create(&mut c, None).await;

    sh_ok(&mut c, &a.id, "echo from-a > /workspace/note; echo changed > /etc/image-marker").await;
    assert_eq!(sh_ok(&mut c, &a.id, "cat /workspace/note").await, "from-a\n");
    let r = sh(&mut c, &b.id, "cat /workspace/note").await;
    assert_ne!(r.exit_code, Some(0), "session b sees session a's file");
    assert_eq!(sh_ok(&mut c, &b.id, "cat /etc/image-marker").await, "base image file\n");
    // The base image itself is untouched.
    assert!(!d.image.join("workspace/note").exists());
    assert_eq!(std::fs::read_to_string(d.image.join("etc/image-marker")).unwrap(), "base image file\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_base_image_runs_python() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let out = sh_ok(
        &mut c,
        &s.id,
        "python3 -c 'import sys; print(sys.version_info[0])'; bash -c 'echo $BASH_VERSION'",
    )
    .await;
    assert!(out.starts_with("3\n5."), "{out}");
    assert_eq!(
        sh_ok(&mut c, &s.id, "cat /etc/os-release | grep VERSION_CODENAME").await.trim(),
        "VERSION_CODENAME=bookworm"
    );
}

/// The seccomp allowlist leaves a normal Debian userland working: interpreters
/// with threads, subprocesses and event loops, the package tools, a compiler.
#[tokio::test(flavor = "multi_thread")]
async fn debian_tools_work_under_the_syscall_allowlist() {
    let Some(image) = debian_image_or_skip() else { return };
    let d = Daemon::start_with(image, vec![], None);
    let mut c = d.client().await;
    let s = create(&mut c, None).await;
    let python = r#"python3 -c '
import asyncio, concurrent.futures, multiprocessing, subprocess, socket, ssl, sqlite3, tempfile, os
async def main():
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
    w.write(b"ping"); await w.drain(); w.close()
async def echo(r, w): print("got", (await r.read(4)).decode())
async def serve():
    global srv
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    await main(); await asyncio.sleep(0.1)
asyncio.run(serve())
with concurrent.futures.ThreadPoolExecutor(4) as ex: print("threads", sum(ex.map(abs, [-1, -2])))
with multiprocessing.Pool(2) as p: print("procs", sum(p.map(abs, [-3, -4])))
print(subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout.strip())
db = sqlite3.connect(tempfile.mktemp()); db.execute("create table t(x)"); print("sqlite ok")
print("ssl", ssl.OPENSSL_VERSION.split()[0], "cpus", os.cpu_count() > 0)
'"#;
    let out = sh_ok(&mut c, &s.id, python).await;
    assert_eq!(out, "got ping\nthreads 3\nprocs 7\nsub\nsqlite ok\nssl OpenSSL cpus True\n");
    let node = r#"node -e '
const { Worker } = require("worker_threads"); const fs = require("fs"); const cp = require("child_process");
const crypto = require("crypto"); const net = require("net");
fs.writeFileSync("/tmp/n", "x"); fs.promises.readFile("/tmp/n", "utf8").then(t => console.log("fs", t));
new Worker("require(\"worker_threads\").parentPort.postMessage(6*7)", { eval: true })
  .on("message", m => console.log("worker", m));
console.log("child", cp.execFileSync("echo", ["hi"]).toString().trim());
console.log("hash", crypto.createHash("sha256").update("a").digest("hex").slice(0, 8));
const srv = net.createServer(s => s.end("pong")).listen(0, "127.0.0.1", () => {
  net.connect(srv.address().port, "127.0.0.1").on("data", d => { console.log("net", d.toString()); srv.close(); });
});
'"#;
    let out = sh_ok(&mut c, &s.id, node).await;
    for want in ["child hi", "hash ca978112", "fs x", "worker 42", "net pong"] {
        assert!(out.lines().any(|l| l == want), "node: no {want:?} in {out}");
    }
    let out = sh_ok(
        &mut c,
        &s.id,
        "apt-get --version | head -1; dpkg -l | grep -c '^ii'; pip --version; \
         echo 'int main(){return 0;}' > /tmp/t.c && cc -o /tmp/t /tmp/t.c && /tmp/t && echo cc ok",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("apt "), "{out}");
    assert!(lines[1].parse::<u32>().unwrap() > 100, "{out}");
    assert!(lines[2].starts_with("pip "), "{out}");
    assert_eq!(lines[3], "cc ok", "{out}");
    // setarch -R asks for ADDR_NO_RANDOMIZE, which the filter refuses;
    // setarch with the plain Linux personality works.
    let r = sh(&mut c, &s.id, "setarch -R true").await;
    assert_ne!(r.exit_code, Some(0), "setarch -R (ASLR off) worked");
    assert_eq!(sh_ok(&mut c, &s.id, "setarch linux64 echo ok").await, "ok\n");
}
