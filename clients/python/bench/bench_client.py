#!/usr/bin/env python3
"""Benchmark of the Python client on one paddockd of its own (as root):

1. bash `true` round trip through Tools/RunTool: the Python client (sync and
   async) against the Rust tonic client (target/release/bench-runtool), on the
   same daemon and session, in alternating rounds;
2. a tool call through paddock.anthropic.agent_toolset's tools (what the
   SDK's EnvironmentWorker calls) against a direct RunTool from the same
   async client.

Prints medians and p90s in ms, and the differences.
usage: clients/python/bench/bench_client.py [N] [ROUNDS]   (build: scripts/bench.sh, or
       cargo build --release -p paddock-tests --bin bench-runtool)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon import REPO, Daemon, debian_image  # noqa: E402

from paddock import AsyncPaddock, Paddock  # noqa: E402


def stats(times):
    times = sorted(times)
    return statistics.median(times) * 1e3, times[min(len(times) - 1, len(times) * 9 // 10)] * 1e3


def sync_bash(s, n):
    s.tools.bash("true")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = s.tools.bash("true")
        out.append(time.perf_counter() - t)
        assert not r.is_error
    return out


async def async_calls(call, n):
    await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


def rust_bash(addr, sid, n):
    out = subprocess.run([str(REPO / "target/release/bench-runtool"), addr, sid, str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def factory_vs_direct(addr, n):
    from anthropic.lib.tools.agent_toolset import AgentToolContext

    from paddock.anthropic import agent_toolset

    async with AsyncPaddock(addr) as apd:
        toolset = agent_toolset(apd, ttl="10m")
        with tempfile.TemporaryDirectory() as stage:
            tools = {t.name: t for t in toolset(AgentToolContext(workdir=stage, session_id="sesn_bench"))}
            via_factory = await async_calls(lambda: tools["bash"].call({"command": "true"}), n)
            s = apd.session(toolset.sandboxes["sesn_bench"])
            direct = await async_calls(lambda: s.tools.run("bash", {"command": "true"}), n)
            via_factory += await async_calls(lambda: tools["bash"].call({"command": "true"}), n)
            direct += await async_calls(lambda: s.tools.run("bash", {"command": "true"}), n)
            for t in tools.values():
                await t.aclose()
            await s.delete()
    return via_factory, direct


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    d = Daemon(debian_image())
    try:
        with Paddock(d.addr) as pd:
            s = pd.sessions.create(memory="1G", ttl="30m")
            rust, py_sync, py_async = [], [], []
            for _ in range(rounds):
                rust.append(rust_bash(d.addr, s.id, n))
                py_sync += sync_bash(s, n)

                async def one_async():
                    async with AsyncPaddock(d.addr) as apd:
                        a = apd.session(s.id)
                        return await async_calls(lambda: a.tools.bash("true"), n)

                py_async += asyncio.run(one_async())
            s.delete()
        rust_med = statistics.median(r["median_ms"] for r in rust)
        rust_p90 = statistics.median(r["p90_ms"] for r in rust)
        rows = [("Rust tonic client", rust_med, rust_p90), ("Python Paddock (sync)", *stats(py_sync)),
                ("Python AsyncPaddock", *stats(py_async))]
        print(f"bash `true` through Tools/RunTool, {rounds} rounds x {n} calls, same daemon and session")
        for name, med, p90 in rows:
            print(f"  {name:24s} median {med:.3f} ms  p90 {p90:.3f} ms  vs Rust {med - rust_med:+.3f} ms")
        via, direct = asyncio.run(factory_vs_direct(d.addr, n))
        vm, vp = stats(via)
        dm, dp = stats(direct)
        print(f"bash `true`, {2 * n} calls each, interleaved halves")
        print(f"  agent_toolset tool .call  median {vm:.3f} ms  p90 {vp:.3f} ms")
        print(f"  direct RunTool (async)    median {dm:.3f} ms  p90 {dp:.3f} ms  factory overhead {vm - dm:+.3f} ms")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
