#!/usr/bin/env python3
"""Times the anthropic SDK's reference agent tools on the host (no sandbox):
bash `true`, a 4 KiB read and a 1 MiB write, N calls each. Prints JSON with
the median and p90 in milliseconds. Used by the bench-tools benchmark.

usage: bench_reference.py N
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time

from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401


async def main():
    n = int(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        ctx = AgentToolContext(workdir=tmp)
        tools = {t.name: t for t in beta_agent_toolset_20260401(ctx)}
        with open(f"{tmp}/4k.txt", "w") as f:
            f.write("x" * 4095 + "\n")
        payload = "y" * (1 << 20)
        cases = {
            "bash_true": ("bash", {"command": "true"}),
            "read_4k": ("read", {"file_path": "4k.txt"}),
            "write_1m": ("write", {"file_path": "1m.txt", "content": payload}),
        }
        out = {}
        for key, (name, tool_input) in cases.items():
            await tools[name].call(dict(tool_input))  # warm up (starts the shell)
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await tools[name].call(dict(tool_input))
                times.append((time.perf_counter() - t) * 1e3)
            times.sort()
            out[key] = {"median_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9)]}
        for t in tools.values():
            close = getattr(t, "aclose", None)
            if close:
                await close()
    print(json.dumps(out))


asyncio.run(main())
