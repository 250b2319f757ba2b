"""``paddock-worker``: a self-hosted Managed Agents environment worker whose
tools run in Paddock (the equivalent of ``ant beta:worker poll``, with the
anthropic SDK's own `EnvironmentWorker` doing the polling, leases, event
stream, skills and memory, and `agent_toolset` running the tools).

    paddock-worker --environment-id env_... --environment-key ek_...
    paddock-worker run        # one claimed item, from the ANTHROPIC_* variables
                              # (an `ant beta:worker poll --on-work` target)

Every flag has the SDK's variable as its default: ANTHROPIC_ENVIRONMENT_ID,
ANTHROPIC_ENVIRONMENT_KEY, ANTHROPIC_WORKER_ID, ANTHROPIC_BASE_URL (read by
the SDK client itself); PADDOCK_ADDR and PADDOCK_TOKEN pick the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from typing import List, Optional

from ._toolset import agent_toolset


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="paddock-worker",
        description="Poll a self-hosted Managed Agents environment and run every session's tools in Paddock.",
    )
    p.add_argument("mode", nargs="?", choices=["poll", "run"], default="poll",
                   help="poll (default): claim work items until stopped; run: serve the one item "
                        "named by ANTHROPIC_WORK_ID/ANTHROPIC_SESSION_ID (secret: ANTHROPIC_WORK_SECRET or the "
                        "work item JSON on stdin)")
    p.add_argument("--environment-id", default=env("ANTHROPIC_ENVIRONMENT_ID"))
    p.add_argument("--environment-key", default=env("ANTHROPIC_ENVIRONMENT_KEY"))
    p.add_argument("--worker-id", default=env("ANTHROPIC_WORKER_ID"))
    p.add_argument("--base-url", default=env("ANTHROPIC_BASE_URL"), help="the API's base URL (default: the SDK's)")
    p.add_argument("--workdir", default=None,
                   help="host staging dir for the SDK's skills and memory downloads (default: a new temp dir); "
                        "the tools run in the sandbox's /workspace")
    p.add_argument("--max-idle", type=float, default=60.0,
                   help="seconds to stay attached after a session goes idle (default 60)")
    p.add_argument("--addr", default=None, help="paddockd address (default $PADDOCK_ADDR or the unix socket)")
    p.add_argument("--token", default=None, help="paddockd token (default $PADDOCK_TOKEN)")
    p.add_argument("--env", dest="environment", default=None, help="the Paddock environment sandboxes start from")
    p.add_argument("--memory", default=None, help="sandbox memory limit, e.g. 2G")
    p.add_argument("--cpus", type=float, default=None)
    p.add_argument("--pids", type=int, default=None)
    p.add_argument("--disk", default=None, help="sandbox disk limit, e.g. 10G")
    p.add_argument("--network", choices=["none", "limited", "unrestricted"], default=None,
                   help="sandbox egress (default none; limited with --allow-host)")
    p.add_argument("--allow-host", action="append", default=[], help="with limited networking (repeatable)")
    p.add_argument("--ttl", default="24h", help="delete a sandbox this long after it was made (default 24h)")
    p.add_argument("--log-level", default=env("PADDOCK_WORKER_LOG", "info"))
    return p


def _network(args: argparse.Namespace):
    if args.allow_host:
        return {"mode": args.network or "limited", "allowed_hosts": args.allow_host}
    return args.network or "none"


def _secret_from_stdin() -> Optional[str]:
    # `ant beta:worker poll --on-work` hands the work item JSON on stdin and
    # exports no secret variable (its docs' spawn.sh reads `.secret` with jq).
    if sys.stdin is None or sys.stdin.isatty():
        return None
    import json

    data = sys.stdin.read().strip()
    if not data:
        return None
    try:
        return json.loads(data).get("secret") or None
    except (ValueError, AttributeError):
        return None


async def _main(args: argparse.Namespace) -> None:
    from anthropic import AsyncAnthropic
    from anthropic.lib.environments import EnvironmentWorker

    toolset = agent_toolset(
        addr=args.addr, token=args.token, environment=args.environment, memory=args.memory, cpus=args.cpus,
        pids=args.pids, disk=args.disk, network=_network(args), ttl=args.ttl,
    )
    workdir = args.workdir or tempfile.mkdtemp(prefix="paddock-worker-")
    client = AsyncAnthropic(**({"base_url": args.base_url} if args.base_url else {}))
    worker = EnvironmentWorker(
        client,
        environment_id=args.environment_id,
        environment_key=args.environment_key,
        tools=toolset,
        workdir=workdir,
        max_idle=args.max_idle,
        worker_id=args.worker_id,
    )
    task = asyncio.ensure_future(
        worker.run() if args.mode == "poll" else worker.handle_item(work_secret=_secret_from_stdin())
    )
    # SIGTERM/SIGINT cancel the worker, which then tears down cleanly: tools
    # closed, memory flushed, the work item stopped.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await toolset.aclose()
        await client.close()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.mode == "poll" and not (args.environment_id and args.environment_key):
        print("paddock-worker: --environment-id and --environment-key (or ANTHROPIC_ENVIRONMENT_ID and "
              "ANTHROPIC_ENVIRONMENT_KEY) are required to poll", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main(args))
    except ValueError as e:  # the SDK's own "handle_item: ... is required" and the like
        print(f"paddock-worker: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
