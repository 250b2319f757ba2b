#!/usr/bin/env python3
"""Differential test of the agent toolset: the same sequence of tool calls runs
through the anthropic SDK's reference tools in a temporary directory on the
host and through Paddock's Tools/RunTool in a sandbox; every result must be
equal (after the host's workdir path is written as /workspace).

usage: toolset_diff.py ADDR SESSION_ID      (ADDR: host:port of paddockd)
Exit status 0 when all results agree; the differences are printed otherwise.

The Python client's tests import CALLS and normalize() from here, to run the
same cases through paddock.anthropic.tools(session).
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from anthropic.lib.tools._beta_functions import ToolError
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

PNG = (
    "\\x89PNG\\r\\n\\x1a\\n\\x00\\x00\\x00\\rIHDR\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x01\\x08\\x06"
    "\\x00\\x00\\x00\\x1f\\x15\\xc4\\x89"
)

# (tool, input). Order matters: files are made by earlier calls.
CALLS = [
    ("write", {"file_path": "notes.txt", "content": "alpha\nbeta\ngamma\n"}),
    ("write", {"file_path": "sub/dir/deep.py", "content": "print('hi')\n"}),
    ("write", {"file_path": "unicode.txt", "content": "héllo wörld\n"}),
    ("read", {"file_path": "notes.txt"}),
    ("read", {"file_path": "notes.txt", "view_range": [2, 3]}),
    ("read", {"file_path": "notes.txt", "view_range": [2, -1]}),
    ("read", {"file_path": "notes.txt", "view_range": [5, 9]}),
    ("read", {"file_path": "notes.txt", "view_range": []}),
    ("read", {"file_path": "notes.txt", "view_range": [1]}),
    ("read", {"file_path": "missing.txt"}),
    ("read", {"file_path": "sub"}),
    ("read", {"file_path": "notes.txt/inner"}),
    ("edit", {"file_path": "notes.txt", "old_string": "beta", "new_string": "BETA"}),
    ("read", {"file_path": "notes.txt"}),
    ("edit", {"file_path": "notes.txt", "old_string": "zzz", "new_string": "y"}),
    ("edit", {"file_path": "missing.txt", "old_string": "a", "new_string": "b"}),
    ("write", {"file_path": "dup.txt", "content": "x x x"}),
    ("edit", {"file_path": "dup.txt", "old_string": "x", "new_string": "y"}),
    ("edit", {"file_path": "dup.txt", "old_string": "x", "new_string": "y", "replace_all": True}),
    ("read", {"file_path": "dup.txt"}),
    ("glob", {"pattern": "*.txt"}),
    ("glob", {"pattern": "**/*.py"}),
    ("glob", {"pattern": "*.py", "path": "sub/dir"}),
    ("glob", {"pattern": "nomatch*"}),
    ("glob", {"pattern": "/etc/*"}),
    ("glob", {"pattern": "../*"}),
    ("grep", {"pattern": "BETA"}),
    ("grep", {"pattern": "print", "path": "sub"}),
    ("grep", {"pattern": "zzz_not_there"}),
    ("grep", {"pattern": "gamma", "path": "notes.txt"}),
    ("bash", {"command": "echo hello"}),
    ("bash", {"command": "cd sub && pwd"}),
    ("bash", {"command": "pwd; export KEPT=yes"}),
    ("bash", {"command": "echo $KEPT"}),
    ("bash", {"command": "echo to-stderr >&2; (exit 4)"}),
    ("bash", {"command": "false"}),
    ("bash", {"command": "cat"}),
    ("bash", {"command": "printf '\\033[31mred\\033[0m\\n'"}),
    ("bash", {}),
    ("bash", {"command": "sleep 5", "timeout_ms": 300}),
    ("bash", {"command": "echo after timeout"}),
    ("bash", {"restart": True}),
    ("bash", {"command": "pwd"}),
    ("bash", {"command": "head -c 300000 /dev/zero | tr '\\\\0' a > big.txt; echo done"}),
    ("read", {"file_path": "big.txt"}),
    ("read", {"file_path": "big.txt", "view_range": [1, 1]}),
    ("bash", {"command": "seq 1 200000 > lines.txt; wc -l < lines.txt"}),
    ("read", {"file_path": "lines.txt", "view_range": [10, 12]}),
    ("bash", {"command": "printf '\\377\\376bin' > bin.dat; printf '" + PNG + "' > pixel.png"}),
    ("read", {"file_path": "bin.dat"}),
    ("read", {"file_path": "pixel.png"}),
    ("read", {"file_path": "pixel.png", "view_range": [1, 2]}),
    ("bash", {"command": "seq 1 30000"}),
    # After this the reference raises a bare BrokenResourceError on the next
    # call (not a ToolError); Paddock answers "bash session terminated; restart
    # required". That call is left out.
    ("bash", {"command": "exit 3"}),
]


def normalize(content, is_error, workdir):
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    out = []
    for b in blocks:
        if b.get("type") == "text":
            out.append({"type": "text", "text": b["text"].replace(workdir, "/workspace")})
        else:
            out.append({"type": b["type"], "media_type": b["source"]["media_type"], "data": b["source"]["data"]})
    return {"is_error": bool(is_error), "content": out}


# A bearer token for paddockd's TCP listener, if it needs one.
TOKEN = os.environ.get("PADDOCK_TOKEN", "")


def paddock_result(addr, session, name, tool_input):
    body = json.dumps({"session_id": session, "name": name, "input_json": json.dumps(tool_input)})
    auth = ["-H", f"authorization: Bearer {TOKEN}"] if TOKEN else []
    p = subprocess.run(
        ["grpcurl", "-plaintext", *auth, "-max-msg-sz", str(64 << 20), "-d", "@", addr, "paddock.v1.Tools/RunTool"],
        input=body.encode(),
        capture_output=True,
        check=False,
    )
    if p.returncode != 0:
        return {"rpc_error": p.stderr.decode(errors="replace").strip()}
    r = json.loads(p.stdout or b"{}")
    blocks = []
    for b in r.get("content", []):
        if "text" in b:
            blocks.append({"type": "text", "text": b["text"]})
        else:
            kind = "image" if "image" in b else "document"
            src = b[kind]
            blocks.append({"type": kind, "source": {"media_type": src.get("mediaType", ""), "data": src.get("data", "")}})
    if not blocks:
        blocks = [{"type": "text", "text": ""}]
    return normalize(blocks, r.get("isError", False), "/workspace")


def unordered_if_grep(name, result):
    # ripgrep searches in parallel: the order of its lines is not defined.
    if name == "grep" and "content" in result:
        for b in result["content"]:
            if b["type"] == "text":
                b["text"] = "\n".join(sorted(b["text"].split("\n")))
    return result


async def main():
    addr, session = sys.argv[1], sys.argv[2]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = str(Path(tmp).resolve())
        ctx = AgentToolContext(workdir=workdir)
        tools = {t.name: t for t in beta_agent_toolset_20260401(ctx)}
        for i, (name, tool_input) in enumerate(CALLS):
            try:
                content, is_error = await tools[name].call(dict(tool_input)), False
            except ToolError as e:
                content, is_error = e.content, True
            reference = unordered_if_grep(name, normalize(content, is_error, workdir))
            ours = unordered_if_grep(name, paddock_result(addr, session, name, tool_input))
            if reference != ours:
                failures += 1
                print(f"DIFFERENT #{i} {name} {json.dumps(tool_input)}")
                print(f"  reference: {json.dumps(reference)[:600]}")
                print(f"  paddock:   {json.dumps(ours)[:600]}")
        for t in tools.values():
            close = getattr(t, "aclose", None)
            if close:
                await close()
    print(f"{len(CALLS) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    asyncio.run(main())
