"""The Python client against a real paddockd: every service, sync and async."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import pytest

import paddock
from paddock import Paddock, errors


# ---------------------------------------------------------------- sessions


def test_session_lifecycle(pd):
    s = pd.sessions.create(memory="1G", cpus=0.5, pids=300, ttl="10m", labels={"who": "pytest"})
    try:
        info = s.info
        assert info.state == "running"
        assert info.limits.memory_bytes == 1 << 30
        assert info.limits.cpus == 0.5
        assert info.limits.pids == 300
        assert info.labels == {"who": "pytest"}
        assert info.expires_at_ms - info.created_at_ms == 600_000
        assert s.id in [x.id for x in pd.sessions.list()]
        assert pd.sessions.get(s.id).info.labels["who"] == "pytest"
        assert s.stop().state == "stopped"
        with pytest.raises(errors.FailedPrecondition) as e:
            s.exec("true")
        assert e.value.status.name == "FAILED_PRECONDITION" and e.value.message
    finally:
        s.delete()
    with pytest.raises(errors.NotFound):
        pd.sessions.get(s.id)


def test_pause_resume_and_idle_fields(pd):
    with pd.sessions.create(idle_timeout="10m", idle_action="pause") as s:
        assert (s.info.idle_timeout_seconds, s.info.idle_action, s.info.auto_resume) == (600, "pause", False)
        s.exec("echo 1 > /tmp/n")
        assert s.pause().state == "paused"
        with pytest.raises(errors.FailedPrecondition) as e:
            s.exec("true")
        assert "paused" in e.value.message
        assert s.resume().state == "running"
        assert s.exec("cat /tmp/n").text == "1\n"
    with pd.sessions.create(auto_resume=True) as s:
        s.pause()
        assert s.exec("echo woke").text == "woke\n"
        assert s.refresh().state == "running"
    with pytest.raises(ValueError):
        pd.sessions.create(idle_action="sleep")


def test_set_ttl_replaces_clears_and_expires(pd):
    with pd.sessions.create(ttl="30m") as s:
        first = s.info.expires_at_ms
        assert first > 0
        before = time.time() * 1000
        info = s.set_ttl("2h")
        # Counted from now: about two hours ahead, later than the 30 minutes given at create.
        assert before + 7200_000 - 1000 <= info.expires_at_ms <= time.time() * 1000 + 7200_000 + 1000
        assert info.expires_at_ms > first
        assert s.refresh().expires_at_ms == info.expires_at_ms, "the daemon kept the new deadline"
        assert s.set_ttl(None).expires_at_ms == 0
        assert s.refresh().expires_at_ms == 0
        with pytest.raises(errors.InvalidArgument) as e:
            s.set_ttl(-5)
        assert "ttl_seconds" in e.value.message
        assert s.refresh().expires_at_ms == 0, "a refused TTL changed nothing"
        # A short TTL really ends the session (a part second counts as one).
        s.set_ttl("500ms")
        deadline = time.time() + 15
        while True:
            try:
                s.refresh()
            except errors.NotFound:
                break
            assert time.time() < deadline, "the session outlived its 1 s TTL by 15 s"
            time.sleep(0.2)
    with pytest.raises(errors.NotFound):
        pd.session("ses-local-0000000000000000").set_ttl("1h")


def test_context_manager_deletes(pd):
    with pd.sessions.create() as s:
        assert s.exec("true").ok
    with pytest.raises(errors.NotFound):
        s.refresh()


def test_exec(session):
    r = session.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, b"out\n", b"err\n", False)
    r = session.exec(["cat"], stdin=b"fed in", cwd="/tmp", env={"X": "1"})
    assert r.stdout == b"fed in"
    r = session.exec(["sh", "-c", "pwd; echo $X"], cwd="/tmp", env={"X": "1"})
    assert r.text == "/tmp\n1\n"
    r = session.exec("sleep 5", timeout="200ms")
    assert r.timed_out and r.signal == 9
    r = session.exec("head -c 5000 /dev/zero", output_limit=1000)
    assert len(r.stdout) == 1000 and r.stdout_truncated


def test_exec_stream(session):
    events = list(session.exec_stream("echo a; sleep 0.2; echo b >&2; exit 1"))
    assert b"".join(e.stdout for e in events) == b"a\n"
    assert b"".join(e.stderr for e in events) == b"b\n"
    assert events[-1].exit is not None and events[-1].exit.exit_code == 1
    assert sum(1 for e in events if e.exit) == 1


# ---------------------------------------------------------------- tools


def test_tools(session):
    t = session.tools
    assert t.write("notes.txt", "alpha\nbeta\n").text == "wrote 11 bytes to notes.txt"
    assert t.read("notes.txt").text == "alpha\nbeta\n"
    assert t.read("notes.txt", view_range=[2, 2]).text == "beta"
    r = t.edit("notes.txt", "beta", "BETA")
    assert not r.is_error
    assert "BETA" in session.files.read_text("/workspace/notes.txt")
    assert t.glob("*.txt").text == "/workspace/notes.txt"
    assert t.grep("BETA").text.strip() == "/workspace/notes.txt:2:BETA"
    assert t.bash("cd /tmp && export K=v").text == ""
    assert t.bash("pwd; echo $K").text == "/tmp\nv"
    r = t.bash("echo nope; exit 4")
    assert r.is_error and r.text == "nope"
    r = t.read("missing.txt")
    assert r.is_error and r.text == "read: missing.txt: no such file or directory"
    assert t.bash(restart=True).text == "bash session restarted"
    assert t.run("bash", {"command": "pwd"}).text == "/workspace"
    with pytest.raises(errors.InvalidArgument):
        t.run("nosuchtool", {})
    with pytest.raises(errors.InvalidArgument):
        t.run("read", {"bad": 1})


def test_tool_image_block(session):
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
    session.files.write_bytes("/workspace/p.png", png)
    r = session.tools.read("p.png")
    assert r.content[0]["type"] == "image"
    assert r.content[0]["source"]["media_type"] == "image/png"
    import base64

    assert base64.b64decode(r.content[0]["source"]["data"]) == png


# ---------------------------------------------------------------- files


def test_files(session, tmp_path):
    f = session.files
    info = f.write_bytes("/workspace/a/b.bin", b"\x00\x01binary", mode=0o600)
    assert info.path == "/workspace/a/b.bin" and info.size == 8
    assert f.read_bytes("a/b.bin") == b"\x00\x01binary"
    st = f.stat("a/b.bin")
    assert st.is_file and st.mode & 0o777 == 0o600
    assert f.stat("a").is_dir
    assert f.exists("a/b.bin") and not f.exists("a/none")
    f.mkdir("/workspace/d/e")
    f.move("a/b.bin", "d/e/c.bin")
    assert [e.path for e in f.list("d", depth=2)] == ["/workspace/d/e", "/workspace/d/e/c.bin"]
    with pytest.raises(errors.NotFound):
        f.stat("a/b.bin")
    f.remove("d", recursive=True)
    assert not f.exists("d")

    # A local directory up and back, as tar streams.
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "sub" / "x.py").write_text("print(1)")
    os.chmod(src / "sub" / "x.py", 0o755)
    f.upload(src, "/workspace/tree")
    assert session.exec("cat /workspace/tree/top.txt /workspace/tree/sub/x.py").stdout == b"topprint(1)"
    dst = tmp_path / "dst"
    info = f.download("/workspace/tree", dst)
    assert info.is_dir
    assert (dst / "top.txt").read_text() == "top"
    assert (dst / "sub" / "x.py").read_text() == "print(1)"
    assert os.stat(dst / "sub" / "x.py").st_mode & 0o777 == 0o755
    # A single file, with its mode.
    (tmp_path / "one.sh").write_text("#!/bin/sh\necho one\n")
    os.chmod(tmp_path / "one.sh", 0o750)
    f.upload(tmp_path / "one.sh", "/workspace/one.sh")
    assert session.exec("/workspace/one.sh").text == "one\n"
    f.download("/workspace/one.sh", tmp_path / "back.sh")
    assert (tmp_path / "back.sh").read_text() == "#!/bin/sh\necho one\n"


def test_watch(session):
    session.files.mkdir("/workspace/w")
    events = session.files.watch("/workspace/w")
    session.processes.start("sleep 0.3; echo x > /workspace/w/new.txt")
    first = next(events)
    events.close()
    assert first.path == "/workspace/w/new.txt" and first.kind == "created"


def test_big_transfer_keeps_its_sha256(pd, tmp_path):
    """1 GiB up and down through the client, streamed, with its SHA-256 intact."""
    size = 1 << 30
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(src, "wb") as out:
        for i in range(size >> 20):
            # Every MiB different: a lost or repeated chunk changes the hash.
            b = i.to_bytes(8, "little") + block[8:]
            h.update(b)
            out.write(b)
    want = h.hexdigest()
    with pd.sessions.create(memory="512M", disk="3G", ttl="30m") as s:
        t = time.monotonic()
        info = s.files.upload(src, "/workspace/big.bin")
        up = time.monotonic() - t
        assert info.size == size
        remote = s.exec(["sha256sum", "/workspace/big.bin"], timeout="2m").text.split()[0]
        assert remote == want
        src.unlink()
        dst = tmp_path / "back.bin"
        t = time.monotonic()
        s.files.download("/workspace/big.bin", dst)
        down = time.monotonic() - t
        h = hashlib.sha256()
        with open(dst, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        assert h.hexdigest() == want
        print(f"1 GiB upload {up:.2f} s ({size / up / 1e6:.0f} MB/s), download {down:.2f} s ({size / down / 1e6:.0f} MB/s)")


# ---------------------------------------------------------------- processes


def test_processes(session):
    p = session.processes.start(["sh", "-c", "read line; echo got $line; echo err >&2; sleep 30"], tag="reader")
    assert p.pid > 0 and p.tag == "reader"
    p.write_stdin("hello\n")
    out = b""
    for ev in p.attach(follow=True):
        out += ev.data
        if b"got hello\nerr\n" in out or (b"got hello\n" in out and b"err\n" in out):
            break
    assert b"got hello\n" in out
    assert any(x.tag == "reader" and x.running for x in session.processes.list())
    # Replay from an offset, without following.
    replay = b"".join(ev.data for ev in session.processes.get("reader").attach(offset=4, follow=False))
    assert replay.startswith(b"hello\n"[0:0] + out[4:8])
    p.signal(signal.SIGTERM)
    info = p.wait()
    assert not info.running and info.signal == signal.SIGTERM


def test_pty_process(session):
    p = session.processes.start("stty size; sleep 0.5; stty size", pty=(24, 80))
    time.sleep(0.2)
    p.resize(40, 120)
    out = b"".join(ev.data for ev in p.attach())
    assert b"24 80" in out and b"40 120" in out
    p2 = session.processes.start(["cat"])
    p2.write_stdin(b"bye", close=True)
    assert b"".join(ev.data for ev in p2.attach()) == b"bye"
    assert p2.wait().exit_code == 0


# ---------------------------------------------------------------- code


def test_code(session):
    r = session.code.run("x = 40\nx + 2")
    assert r.result == "42" and r.error is None
    assert session.code.run("print(x)").stdout == "40\n"
    r = session.code.run("1/0")
    assert r.error.name == "ZeroDivisionError"
    ctx = session.code.create_context("python")
    assert session.code.run("x", context=ctx.id).error.name == "NameError"
    assert ctx.id in [c.id for c in session.code.contexts()]
    session.code.restart_context(ctx.id)
    session.code.delete_context(ctx.id)
    assert ctx.id not in [c.id for c in session.code.contexts()]
    assert session.code.run("echo $((6*7))", language="bash").stdout.strip() == "42"


# ---------------------------------------------------------------- network


def test_network(pd):
    with pd.sessions.create(network={"allowed_hosts": ["api.example.com"]}) as s:
        st = s.network.get()
        assert st.policy.mode == "limited" and st.policy.allowed_hosts == ["api.example.com"]
        st = s.network.update("none")
        assert st.policy.mode == "none"
        st = s.network.update(paddock.NetworkPolicy(mode="limited", allowed_hosts=["*.example.org:443"]))
        assert st.policy.allowed_hosts == ["*.example.org:443"]
        with pytest.raises(errors.InvalidArgument) as e:
            s.network.update({"mode": "limited", "allowed_hosts": ["bad host!"]})
        assert "allowed_hosts[0]" in e.value.message


# ---------------------------------------------------------------- environments and tokens


def test_environments(pd):
    name = f"pytest-env-{os.getpid()}"
    env = pd.environments.create(name, env={"MODE": "test"}, description="from pytest")
    try:
        assert env.name == name
        assert pd.environments.get(name).env["MODE"] == "test"
        assert name in [e.name for e in pd.environments.list()]
        events = list(pd.environments.build(name))
        assert events and events[-1].WhichOneof("event") == "done"
        with pd.sessions.create(environment=name) as s:
            assert s.exec("echo $MODE").text == "test\n"
    finally:
        pd.environments.delete(name)
    with pytest.raises(errors.NotFound):
        pd.environments.get(name)


def test_tokens_and_auth(daemon, pd):
    if daemon is None:
        pytest.skip("needs the test's own daemon (makes tokens)")
    tok = pd.tokens.create(f"t-{os.getpid()}", tenant="team-a")
    assert tok.token
    assert f"t-{os.getpid()}" in [t.name for t in pd.tokens.list()]
    # A tenant's token over TCP: its own sessions only, no admin calls.
    with Paddock(daemon.tcp, tok.token) as tenant:
        with tenant.sessions.create() as s:
            assert s.info.tenant == "team-a"
            assert s.exec("echo hi").text == "hi\n"
        with pytest.raises(errors.PermissionDenied):
            tenant.tokens.list()
        others = pd.sessions.create()
        try:
            with pytest.raises(errors.NotFound):
                tenant.sessions.get(others.id)
        finally:
            others.delete()
    # No token, a bad token, a removed token.
    with Paddock(daemon.tcp, "") as anon:
        with pytest.raises(errors.Unauthenticated):
            anon.sessions.list()
    with Paddock(daemon.tcp, "pdk_not_a_token") as bad:
        with pytest.raises(errors.Unauthenticated):
            bad.sessions.list()
    pd.tokens.delete(f"t-{os.getpid()}")
    with Paddock(daemon.tcp, tok.token) as gone:
        with pytest.raises(errors.Unauthenticated):
            gone.sessions.list()


def test_env_vars_pick_the_daemon(daemon, token, monkeypatch):
    if daemon is None:
        pytest.skip("needs the test's own daemon")
    monkeypatch.setenv("PADDOCK_ADDR", daemon.tcp)
    monkeypatch.setenv("PADDOCK_TOKEN", token)
    with Paddock() as pd:
        assert isinstance(pd.sessions.list(), list)
    monkeypatch.setenv("PADDOCK_ADDR", f"http://{daemon.tcp}")
    with Paddock() as pd:
        assert isinstance(pd.sessions.list(), list)


# ---------------------------------------------------------------- errors


def test_errors_map_to_types(pd, daemon):
    with pytest.raises(errors.NotFound) as e:
        pd.session("ses-0000000000000000").exec("true")
    assert isinstance(e.value, paddock.PaddockError) and e.value.code == "NOT_FOUND"
    with pytest.raises(errors.InvalidArgument) as e:
        pd.sessions.create(memory=1)
    assert "memory" in e.value.message
    with pytest.raises(errors.InvalidArgument) as e:
        pd.sessions.create(memory="100T")
    assert "limits.memory_bytes" in e.value.message
    with pytest.raises(errors.FailedPrecondition):
        pd.environments.create(f"unbuilt-{os.getpid()}", packages={"apt": ["jq"]})
        try:
            pd.sessions.create(environment=f"unbuilt-{os.getpid()}")
        finally:
            pd.environments.delete(f"unbuilt-{os.getpid()}")
    with pytest.raises(errors.Unavailable) as e:
        with Paddock("unix:/nonexistent/paddockd.sock") as nowhere:
            nowhere.sessions.list()
    assert "cannot reach paddockd at unix:/nonexistent/paddockd.sock" in e.value.message
    with pytest.raises(ValueError):
        pd.sessions.create(memory="lots")


def test_resource_exhausted(daemon):
    """A daemon of its own with room for one session: the second is refused."""
    if daemon is None:
        pytest.skip("needs to start a daemon")
    from daemon import Daemon, debian_image

    small = Daemon(debian_image(), extra_args=["--max-sessions", "1", "--warm-sandboxes", "0"])
    try:
        with Paddock(small.addr) as pd, pd.sessions.create():
            with pytest.raises(errors.ResourceExhausted) as e:
                pd.sessions.create()
            assert e.value.status.name == "RESOURCE_EXHAUSTED" and e.value.message
    finally:
        small.stop()


# ---------------------------------------------------------------- async


async def test_async_client(apd, tmp_path):
    async with await apd.sessions.create(memory="1G", network="none") as s:
        assert s.info.state == "running"
        r = await s.exec("echo hi")
        assert r.text == "hi\n"
        events = [e async for e in s.exec_stream("echo a; echo b >&2")]
        assert events[-1].exit.exit_code == 0
        assert (await s.tools.bash("echo tool")).text == "tool"
        assert (await s.tools.write("f.txt", "x")).is_error is False
        assert (await s.tools.read("f.txt")).text == "x"
        assert (await s.tools.glob("*.txt")).text == "/workspace/f.txt"
        assert (await s.tools.grep("x")).text.strip() == "/workspace/f.txt:1:x"
        assert not (await s.tools.edit("f.txt", "x", "y")).is_error
        await s.files.write_bytes("/workspace/b.bin", b"bytes")
        assert await s.files.read_bytes("/workspace/b.bin") == b"bytes"
        assert (await s.files.stat("b.bin")).size == 5
        assert "/workspace/b.bin" in [e.path for e in await s.files.list("/workspace")]
        src = tmp_path / "tree"
        (src / "d").mkdir(parents=True)
        (src / "d" / "f").write_text("deep")
        await s.files.upload(src, "/workspace/tree")
        await s.files.download("/workspace/tree", tmp_path / "back")
        assert (tmp_path / "back" / "d" / "f").read_text() == "deep"
        await s.files.download("/workspace/b.bin", tmp_path / "b.bin")
        assert (tmp_path / "b.bin").read_bytes() == b"bytes"
        p = await s.processes.start("echo started; sleep 30", tag="bg")
        async for ev in p.attach():
            if ev.data:
                assert ev.data == b"started\n"
                break
        await p.kill()
        assert (await p.wait()).signal == 9
        assert (await s.code.run("2*21")).result == "42"
        assert (await s.network.get()).policy.mode == "none"
        with pytest.raises(errors.NotFound):
            await s.files.stat("nope")
    with pytest.raises(errors.NotFound):
        await apd.sessions.get(s.id)


async def test_async_set_ttl(apd):
    async with await apd.sessions.create(ttl="30m") as s:
        info = await s.set_ttl(3600)
        assert abs(info.expires_at_ms - (time.time() * 1000 + 3600_000)) < 5000
        assert (await s.refresh()).expires_at_ms == info.expires_at_ms
        assert (await s.set_ttl(None)).expires_at_ms == 0
        with pytest.raises(errors.InvalidArgument):
            await s.set_ttl(0)
