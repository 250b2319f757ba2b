"""paddock.anthropic against the anthropic SDK's own code: the differential
against its reference tools, cancellation, and its unmodified
EnvironmentWorker driving sessions through the factory (against the local
stand-in of the Managed Agents endpoints in standin.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from anthropic.lib.tools._beta_session_runner import _to_session_content
from anthropic.lib.tools._tool_dispatch import tool_error_content, tool_result_content
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

import paddock.anthropic as pa
from daemon import REPO
from standin import STAND_IN, StandIn

sys.path.insert(0, str(REPO / "tests" / "differential"))
from toolset_diff import CALLS  # noqa: E402  (the Rust differential test's cases)

# Input the reference refuses before running anything: pydantic's validation
# of the tool's signature, which paddock.anthropic shares.
BAD_INPUT = [
    ("read", {}),
    ("read", {"file_path": "x", "extra": 1}),
    ("write", {"file_path": "x", "content": 5}),
    ("edit", {"file_path": "x", "old_string": "a"}),
    ("glob", {"pattern": ["*"]}),
    ("bash", {"command": "true", "timeout_ms": "soon"}),
]


async def outcome(tool, tool_input, workdir: str):
    """What the session runner would post: (is_error, content blocks), the
    host workdir written as /workspace, grep's lines sorted (ripgrep's order
    is not defined)."""
    try:
        blocks, _ = _to_session_content(tool_result_content(await tool.call(dict(tool_input))))
        is_error = False
    except Exception as e:  # noqa: BLE001 - every exception is a result to the runner
        blocks, _ = _to_session_content(tool_error_content(e))
        is_error = True
    text = json.dumps(list(blocks)).replace(workdir, "/workspace")
    out = json.loads(text)
    if tool.name == "grep":
        for b in out:
            if b["type"] == "text":
                b["text"] = "\n".join(sorted(b["text"].split("\n")))
    return is_error, out


async def test_differential_against_the_reference_tools(apd, tmp_path):
    workdir = str(tmp_path.resolve())
    reference = {t.name: t for t in beta_agent_toolset_20260401(AgentToolContext(workdir=workdir))}
    async with await apd.sessions.create(memory="1G", ttl="30m") as s:
        ours = {t.name: t for t in pa.tools(s)}
        assert list(ours) == list(reference)
        for name in ours:
            assert ours[name].to_dict() == reference[name].to_dict()
        differences = []
        for i, (name, tool_input) in enumerate(BAD_INPUT + CALLS):
            want = await outcome(reference[name], tool_input, workdir)
            got = await outcome(ours[name], tool_input, "/workspace")
            if want != got:
                differences.append(f"#{i} {name} {json.dumps(tool_input)[:200]}\n  reference: {json.dumps(want)[:500]}\n  paddock:   {json.dumps(got)[:500]}")
        for t in reference.values():
            await t.aclose() if hasattr(t, "aclose") else None
            cm = getattr(t, "_context_manager", None)
            if cm is not None:
                await cm.__aexit__(None, None, None)
    assert not differences, "\n".join(differences)


def test_sync_tools(session):
    tools = {t.name: t for t in pa.tools(session)}
    assert tools["write"].call({"file_path": "s.txt", "content": "sync\n"}) == "wrote 5 bytes to s.txt"
    assert tools["read"].call({"file_path": "s.txt"}) == "sync\n"
    from anthropic.lib.tools import ToolError

    with pytest.raises(ToolError) as e:
        tools["bash"].call({"command": "echo no; exit 2"})
    assert e.value.content == "no"
    with pytest.raises(ValueError, match="Invalid arguments for function read"):
        tools["read"].call({})


async def test_a_cancelled_call_kills_the_running_command(apd, tmp_path):
    """As with the reference: the command dies with the call, and the shell
    reports it must be restarted."""
    workdir = str(tmp_path.resolve())
    reference = {t.name: t for t in beta_agent_toolset_20260401(AgentToolContext(workdir=workdir))}
    async with await apd.sessions.create(ttl="30m") as s:
        ours = {t.name: t for t in pa.tools(s)}
        slow = {"command": "echo $$ > pid; sleep 30; touch finished"}
        for tools, wd in ((reference, workdir), (ours, "/workspace")):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(tools["bash"].call(dict(slow)), 1.0)
        await asyncio.sleep(0.5)
        # The sleep is gone (with its shell): no process with that pid is left.
        pid = (await s.files.read_text("/workspace/pid")).strip()
        alive = await s.exec(f"kill -0 {pid}")
        assert alive.exit_code != 0, f"the cancelled command's shell {pid} still runs"
        assert not any("sleep 30" in " ".join(p.argv) for p in await s.processes.list())
        ps = await s.exec("ps -eo args")
        assert "sleep 30" not in ps.text, ps.text
        # The next call: the same answer from both.
        after = {"command": "echo after"}
        assert await outcome(ours["bash"], after, "/workspace") == await outcome(reference["bash"], after, workdir)
        restart = {"restart": True}
        assert await outcome(ours["bash"], restart, "/workspace") == await outcome(reference["bash"], restart, workdir)
        cm = getattr(reference["bash"], "_context_manager", None)
        if cm is not None:
            await cm.__aexit__(None, None, None)


# ---------------------------------------------------------------- the worker

SKILLS = {"demo": {"SKILL.md": b"---\nname: demo\n---\nSay hello.\n", "run.sh": b"#!/bin/sh\necho skill ran\n"}}
ITEMS = [
    [
        ("write", {"file_path": "kept.txt", "content": "from item 1\n"}),
        ("bash", {"command": "cat skills/demo/SKILL.md; export X=1; mkdir -p out && echo made > out/f"}),
        ("bash", {"command": "echo ${X:-unset}; pwd"}),
        ("read", {"file_path": "missing.txt"}),
    ],
    [
        ("read", {"file_path": "kept.txt"}),
        ("bash", {"command": "echo ${X:-unset}; cat out/f"}),
        ("grep", {"pattern": "item", "path": "kept.txt"}),
        ("glob", {"pattern": "*.txt"}),
        ("read", {"file_path": "skills/demo/SKILL.md"}),
        ("edit", {"file_path": "kept.txt", "old_string": "item 1", "new_string": "item 2"}),
        ("bash", {"command": "cat kept.txt; exit 5"}),
    ],
]


def posted(standin: StandIn, sid: str, workdir: str):
    s = standin.sessions[sid]
    out = []
    for ev in s.tool_uses:
        r = s.results[ev["id"]]
        out.append((ev["name"], r["is_error"], json.loads(json.dumps(r["content"]).replace(workdir, "/workspace"))))
    return out


async def test_environment_worker_through_the_factory(apd, tmp_path):
    from anthropic import AsyncAnthropic
    from anthropic.lib.environments import EnvironmentWorker

    standin = StandIn()
    client = AsyncAnthropic(base_url=standin.base_url, api_key="unused-by-the-stand-in", max_retries=0)
    try:
        # The reference: the same worker with the SDK's own tools, on the host.
        ref_dir = str((tmp_path / "reference").resolve())
        Path(ref_dir).mkdir()
        standin.add_session("sesn_reference", ITEMS, SKILLS)
        for _ in ITEMS:
            w = standin.enqueue("sesn_reference")
            await EnvironmentWorker(client, environment_key="ek_standin", workdir=ref_dir, max_idle=0.3).handle_item(
                work_id=w["id"], environment_id=standin.environment_id, session_id="sesn_reference")
            assert w["id"] in standin.stopped

        # Paddock: the polling worker (run()), the factory for its tools.
        toolset = pa.agent_toolset(apd, memory="1G", ttl="1h")
        stage = str((tmp_path / "stage").resolve())
        Path(stage).mkdir()
        standin.add_session("sesn_paddock", ITEMS, SKILLS)
        worker = EnvironmentWorker(client, environment_id=standin.environment_id, environment_key="ek_standin",
                                   tools=toolset, workdir=stage, max_idle=0.3)
        run = asyncio.ensure_future(worker.run())
        sandboxes = []
        try:
            for _ in ITEMS:
                w = standin.enqueue("sesn_paddock")
                assert await asyncio.get_running_loop().run_in_executor(None, standin.wait_stopped, w["id"], 120), \
                    f"work item {w['id']} never stopped"
                sandboxes.append(toolset.sandboxes.get("sesn_paddock"))
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

        ours = posted(standin, "sesn_paddock", "/workspace")
        reference = posted(standin, "sesn_reference", ref_dir)
        assert [name for name, *_ in ours] == [name for calls in ITEMS for name, _ in calls]
        assert ours == reference
        # Two work items of one session saw the same files (item 2 read what item 1 wrote).
        assert ours[len(ITEMS[0])] == ("read", False, [{"type": "text", "text": "from item 1\n"}])
        # ... and a fresh shell each (X was exported in item 1 only).
        assert ours[len(ITEMS[0]) + 1][2][0]["text"] == "unset\nmade"
        # The sandbox was kept between the items (the session was only idle),
        # and deleted once the session terminated.
        assert sandboxes[0] is not None and sandboxes[1] is None
        left = [s for s in await apd.sessions.list() if s.info.labels.get(pa.SESSION_LABEL) == "sesn_paddock"]
        assert left == []
        assert ("GET", f"/v1/environments/{standin.environment_id}/work/poll") in standin.requests
    finally:
        await client.close()
        standin.close()


def test_the_standin_says_it_is_one():
    import urllib.request

    standin = StandIn()
    try:
        standin.add_session("sesn_x", [[]])
        with urllib.request.urlopen(f"{standin.base_url}/v1/sessions/sesn_x") as r:
            assert r.headers["x-paddock-stand-in"] == STAND_IN
    finally:
        standin.close()


def test_paddock_worker_command(addr, token, tmp_path):
    """`paddock-worker` as a user runs it: polls the stand-in, runs the tools
    in Paddock, stops the item; SIGTERM ends it cleanly."""
    import os
    import signal
    import subprocess

    standin = StandIn()
    try:
        standin.add_session("sesn_cli", [[("write", {"file_path": "a.txt", "content": "cli\n"}), ("bash", {"command": "cat a.txt"})]])
        w = standin.enqueue("sesn_cli")
        env = dict(os.environ, PADDOCK_ADDR=addr, ANTHROPIC_API_KEY="unused-by-the-stand-in",
                   ANTHROPIC_ENVIRONMENT_ID=standin.environment_id, ANTHROPIC_ENVIRONMENT_KEY="ek_standin")
        if token:
            env["PADDOCK_TOKEN"] = token
        worker = Path(sys.executable).parent / "paddock-worker"
        p = subprocess.Popen([str(worker), "--base-url", standin.base_url, "--max-idle", "0.3", "--workdir", str(tmp_path)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert standin.wait_stopped(w["id"], 60), "the work item was never stopped"
        finally:
            p.send_signal(signal.SIGTERM)
            out = p.communicate(timeout=30)[0].decode(errors="replace")
        assert p.returncode == 0, out
        results = [(n, e, c) for n, e, c in posted(standin, "sesn_cli", "/workspace")]
        assert results == [("write", False, [{"type": "text", "text": "wrote 4 bytes to a.txt"}]),
                           ("bash", False, [{"type": "text", "text": "cli"}])], out
    finally:
        standin.close()


async def test_memory_stores_are_mirrored(apd, tmp_path):
    """A context as the worker builds it for a session with memory stores:
    the store's folder reaches the sandbox, the agent's writes come back to
    the host folder the SDK syncs, host-side changes go in, and a read-only
    store refuses writes with the reference's text."""
    stage = (tmp_path / "stage").resolve()
    notes, ro = stage / "memory" / "notes", stage / "memory" / "rules"
    notes.mkdir(parents=True)
    ro.mkdir(parents=True)
    (notes / "seen.md").write_text("seen before\n")
    (ro / "rule.md").write_text("be kind\n")
    ctx = AgentToolContext(workdir=str(stage), session_id="sesn_memory", allowed_roots=[notes, ro], read_only_roots=[ro])
    toolset = pa.agent_toolset(apd, ttl="10m")
    tools = {t.name: t for t in toolset(ctx)}
    try:
        assert await tools["read"].call({"file_path": "memory/notes/seen.md"}) == "seen before\n"
        await tools["write"].call({"file_path": "memory/notes/new.md", "content": "written in the sandbox\n"})
        assert (notes / "new.md").read_text() == "written in the sandbox\n"
        await tools["bash"].call({"command": "rm memory/notes/seen.md"})
        assert not (notes / "seen.md").exists()
        (notes / "pulled.md").write_text("from the server\n")  # as the SDK's sync would pull it
        assert await tools["read"].call({"file_path": "memory/notes/pulled.md"}) == "from the server\n"
        ref_ctx = AgentToolContext(workdir=str(stage), allowed_roots=[notes, ro], read_only_roots=[ro])
        reference = {t.name: t for t in beta_agent_toolset_20260401(ref_ctx)}
        for name, tool_input in [("write", {"file_path": "memory/rules/rule.md", "content": "x"}),
                                 ("edit", {"file_path": "memory/rules/rule.md", "old_string": "kind", "new_string": "x"})]:
            assert await outcome(tools[name], tool_input, "/workspace") == await outcome(reference[name], tool_input, str(stage))
    finally:
        for t in tools.values():
            await t.aclose()
    sid = toolset.sandboxes.pop("sesn_memory")
    await (apd.session(sid)).delete()
