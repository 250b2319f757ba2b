"""Sandbox.create() to the first commands.run("true") returning, through the
unmodified SDK (tests/src/bin/bench-e2b.rs runs it beside Paddock's gRPC
path). Prints one JSON object: the times in seconds, and the same split
into create and run, and a second commands.run("true") on the same sandbox
(`again`, outside the total: what the first command costs more). The
sandbox is killed after each round, untimed, and the warm pool given 100 ms
to refill."""

import json
import sys
import time

from e2b import Sandbox

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
# One untimed round first: imports, the connection pool, the daemon's caches.
Sandbox.create("base").kill()
total, create, run, again = [], [], [], []
for _ in range(rounds):
    t0 = time.perf_counter()
    sbx = Sandbox.create("base")
    t1 = time.perf_counter()
    sbx.commands.run("true")
    t2 = time.perf_counter()
    sbx.commands.run("true")
    again.append(time.perf_counter() - t2)
    sbx.kill()
    # Untimed, as after each gRPC round (bench-e2b.rs): the warm pool refills.
    time.sleep(0.1)
    total.append(t2 - t0)
    create.append(t1 - t0)
    run.append(t2 - t1)
print(json.dumps({"total": total, "create": create, "run": run, "again": again}))
