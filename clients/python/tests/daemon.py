"""A paddockd of the tests' own, started the way the Rust harness starts one
(tests/src/lib.rs, `Daemon`): its own state dir under /tmp, API socket,
cgroup parent, sandbox subnet and a small disk image; torn down with
everything it made. Needs root, like every Paddock test.

Set PADDOCK_ADDR (and PADDOCK_TOKEN) to run against a daemon that is already
up instead.
"""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[3]


def _bin(env: str, default: Path) -> Path:
    p = Path(os.environ.get(env, default))
    if not p.is_file():
        raise RuntimeError(f"{p} not found; run scripts/build.sh first (or set {env})")
    return p


def debian_image() -> Optional[Path]:
    p = Path(os.environ.get("PADDOCK_DEBIAN_IMAGE", "/var/lib/paddock/images/base/rootfs"))
    return p if (p / "usr/bin/python3").exists() else None


def free_tcp_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _host_networks() -> List[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("local", "broadcast", "unicast"):
            first = line.split()[1]
        try:
            if first != "default":
                nets.append(ipaddress.ip_network(first, strict=False))
        except ValueError:
            pass
    return nets


def free_subnet() -> str:
    """A /24 in 10.64.0.0/10 that no host route overlaps (the daemon refuses one that does)."""
    used = _host_networks()
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(1000):
        net = ipaddress.ip_network(f"10.{rng.randrange(64, 128)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free subnet under 10.64.0.0/10")


class Daemon:
    def __init__(self, image: Path, *, tcp: Optional[str] = None, extra_args: Optional[List[str]] = None) -> None:
        name = f"paddock-pytest-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.state_dir = Path("/tmp") / name
        self.state_dir.mkdir(parents=True)
        self.cgroup_parent = name
        self.socket = self.state_dir / "api.sock"
        self.addr = f"unix:{self.socket}"
        self.tcp = tcp
        self.log_path = self.state_dir / "paddockd.log"
        args = [
            str(_bin("PADDOCKD_BIN", REPO / "target/release/paddockd")),
            "--state-dir", str(self.state_dir),
            "--listen", self.addr,
            "--image", str(image),
            "--guest-binary", str(_bin("PADDOCK_GUEST_BIN", REPO / "target/guest/paddock-guest")),
            "--cgroup-parent", self.cgroup_parent,
            "--sandbox-subnet", free_subnet(),
            # No lookup leaves the machine.
            "--no-system-resolver",
            # Sparse: costs only what the tests write (the 1 GiB transfer).
            "--disk-image-size", "6G",
            *(extra_args or []),
        ]
        if tcp:
            args += ["--listen", tcp]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        # Ready once a connection is accepted (the file appears at bind, before listen).
        while not self._accepts(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"paddockd exited at start ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"paddockd did not listen within 20 s:\n{self.log()}")
            time.sleep(0.005)
        while tcp and not self._accepts(tcp):
            if time.monotonic() > deadline:
                raise RuntimeError(f"paddockd did not listen on {tcp} within 20 s:\n{self.log()}")
            time.sleep(0.005)
        self.net_tag = (self.state_dir / "network-tag").read_text().strip() if (self.state_dir / "network-tag").exists() else ""

    @staticmethod
    def _accepts(where) -> bool:
        try:
            if isinstance(where, Path):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(where))
            else:
                host, port = where.rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        paddock = _bin("PADDOCK_BIN", REPO / "target/release/paddock")
        return subprocess.run([str(paddock), "--addr", self.addr, *args], capture_output=True, text=True)

    def token(self, name: str, tenant: Optional[str] = None) -> str:
        args = ["token", "create", name] + (["--tenant", tenant] if tenant else [])
        out = self.cli(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def stop(self) -> None:
        """Deletes what the tests left through the API, stops the daemon and
        removes whatever it left on the host (as tests/src/lib.rs does)."""
        if self.proc.poll() is None:
            import json

            out = self.cli("session", "ls", "--json")
            for s in json.loads(out.stdout or "[]") if out.returncode == 0 else []:
                self.cli("session", "rm", s["id"])
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The runtime helper has no sandbox left to parent; don't wait for it to notice.
        needle = str(self.state_dir).encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        if self.net_tag:
            for link in os.listdir("/sys/class/net"):
                if link.startswith(f"pd{self.net_tag}"):
                    subprocess.run(["ip", "link", "del", link], capture_output=True)
            subprocess.run(["nft", "delete", "table", "inet", f"paddock_{self.net_tag}"], capture_output=True)
        mounts = [l.split()[4] for l in Path("/proc/self/mountinfo").read_text().splitlines() if len(l.split()) > 4]
        for m in sorted((m for m in mounts if m.startswith(str(self.state_dir))), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for root in _cgroup_roots():
            parent = root / self.cgroup_parent
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
                try:
                    parent.rmdir()
                except OSError:
                    pass
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.state_dir)], capture_output=True)


def _cgroup_roots() -> List[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [p for p in root.iterdir() if not p.is_symlink() and (p / "cgroup.procs").exists()] if root.is_dir() else []
