"""commands.run and friends: exit codes, output callbacks, env, cwd, user,
background commands, kill, stdin, and a PTY."""

import time

import pytest
from e2b import CommandExitException, Sandbox, TimeoutException
from e2b.sandbox.commands.command_handle import PtySize


def test_exit_codes_and_output(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "out\n", "err\n")
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("echo partial; exit 7")
    assert e.value.exit_code == 7
    assert e.value.stdout == "partial\n"


def test_callbacks_see_each_stream(sandbox):
    out, err = [], []
    sandbox.commands.run(
        "for i in 1 2 3; do echo o$i; echo e$i >&2; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "o1\no2\no3\n"
    assert "".join(err) == "e1\ne2\ne3\n"


def test_env_cwd_and_user(sandbox):
    r = sandbox.commands.run("echo $FOO; pwd; whoami; echo $HOME", envs={"FOO": "bar"})
    assert r.stdout == "bar\n/home/user\nuser\n/home/user\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    # Passwordless sudo, as in E2B's templates.
    assert sandbox.commands.run("sudo -n whoami").stdout == "root\n"


def test_sandbox_env_vars_reach_every_command():
    sbx = Sandbox.create("base", envs={"FROM_CREATE": "yes"})
    try:
        assert sbx.commands.run("echo $FROM_CREATE").stdout == "yes\n"
    finally:
        sbx.kill()


def test_background_list_and_kill(sandbox):
    handle = sandbox.commands.run("sleep 300", background=True)
    pids = [p.pid for p in sandbox.commands.list()]
    assert handle.pid in pids
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as e:
        handle.wait()
    assert e.value.exit_code == -1
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(handle.pid) is False


def test_connect_to_a_background_command(sandbox):
    handle = sandbox.commands.run("sleep 0.5; echo late", background=True)
    again = sandbox.commands.connect(handle.pid)
    assert again.wait().stdout == "late\n"


def test_stdin(sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "hello\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello\n"
    # Without stdin=True a reader sees end of file at once.
    assert sandbox.commands.run("cat; echo done").stdout == "done\n"


def test_command_timeout_kills_it(sandbox):
    start = time.time()
    with pytest.raises(Exception):
        sandbox.commands.run("sleep 30", timeout=1)
    assert time.time() - start < 10


def test_pty(sandbox):
    data = bytearray()
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; tty; exit 3\n")
    with pytest.raises(CommandExitException) as e:
        terminal.wait(on_pty=data.extend)
    assert e.value.exit_code == 3
    text = data.decode(errors="replace")
    assert "30 100" in text and "/dev/pts/" in text


def test_a_killed_sandbox_ends_its_commands_saying_so():
    sbx = Sandbox.create("base")
    cmd = sbx.commands.run("sleep 60", background=True)
    sbx.kill()
    with pytest.raises(TimeoutException) as e:
        cmd.wait()
    assert "sandbox was killed" in str(e.value)
