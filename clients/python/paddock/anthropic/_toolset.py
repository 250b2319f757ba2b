"""`agent_toolset(...)`: the tools factory for the anthropic SDK's self-hosted
`EnvironmentWorker`, running every Managed Agents session's tools in a
Paddock sandbox of its own.

How a session maps onto a sandbox (see `anthropic/lib/environments/_worker.py`):

- The worker calls the factory once per work item, synchronously, inside its
  event loop, after it has downloaded the agent's skills into
  ``{workdir}/skills/<name>/`` and its memory stores into their folders. The
  factory starts the sandbox's setup as a task; the first tool call awaits it.
- One sandbox per Managed Agents session, labelled
  ``anthropic.session_id=<id>``: a dormant session's next work item (a new
  item for the same session) finds it again, with its files. Bash restarts per
  work item, as the SDK builds new tools (and a new shell) per item.
- The host ``workdir`` the SDK hands out is a staging area: the tools run in
  the sandbox's /workspace, which is where the reference tools' paths
  (relative ones, and the absolute ones glob and grep print) point.
- Skills are uploaded to ``/workspace/skills/<name>/`` before the first call
  and removed at the end of the item, as the reference removes its copies.
- Memory stores (``ctx.allowed_roots``) are mirrored into the sandbox (the
  same path relative to /workspace, or the same absolute path), host changes
  (the SDK's pulls from the server) are pushed in before each call, and the
  sandbox's copy is pulled back after every call that can write (bash, write,
  edit) and at the end, before the SDK's final sync reads the folder.
  Writes and edits under ``ctx.read_only_roots`` are refused with the
  reference's text.
- A cancelled call (the SDK's 150 s tool timeout, a shutdown) cancels the
  RPC; the daemon then kills the command and the shell, as the reference does.
- At the end of the item the sandbox is deleted if the Managed Agents
  session is terminated (or gone); otherwise it is kept for the next item, and
  the daemon deletes it when its TTL runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from anthropic.lib.tools import ToolError

from .._async import AsyncPaddock, AsyncSession
from ..errors import FailedPrecondition, NotFound
from ..types import NetworkLike, SessionState, ToolResult
from ._tools import async_tools

log = logging.getLogger("paddock.anthropic")

__all__ = ["agent_toolset", "PaddockToolset", "SESSION_LABEL"]

#: The label that keys a sandbox to its Managed Agents session.
SESSION_LABEL = "anthropic.session_id"
SANDBOX_WORKDIR = "/workspace"
_MUTATING = frozenset({"bash", "write", "edit"})


class PaddockToolset:
    """A tools factory: ``EnvironmentWorker(client, tools=agent_toolset(...))``.

    Calling it with an `AgentToolContext` returns the six tools bound to that
    context's session's sandbox. Keeps the sandboxes it made in `sandboxes`
    (Managed Agents session id -> Paddock session id).
    """

    def __init__(
        self,
        paddock: Optional[AsyncPaddock] = None,
        *,
        addr: Optional[str] = None,
        token: Optional[str] = None,
        environment: Optional[str] = None,
        memory: Union[int, str, None] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        disk: Union[int, str, None] = None,
        network: Optional[NetworkLike] = "none",
        ttl: Union[int, float, str, None] = "24h",
        labels: Optional[Mapping[str, str]] = None,
        wait_for_build: bool = False,
    ) -> None:
        self.paddock = paddock or AsyncPaddock(addr, token)
        self._create = dict(
            environment=environment, memory=memory, cpus=cpus, pids=pids, disk=disk, network=network, ttl=ttl,
            wait_for_build=wait_for_build,
        )
        self._labels = dict(labels or {})
        self.sandboxes: Dict[str, str] = {}
        # One set-up at a time per Managed Agents session: two work items of
        # one session never run at once (the lease), but a crashed item's
        # teardown may overlap the next item's start.
        self._locks: Dict[str, asyncio.Lock] = {}

    def __call__(self, ctx: Any) -> List[Any]:
        item = _WorkItem(self, ctx)
        tools = async_tools(item.run)
        for tool in tools:
            # The session runner calls `aclose` on every tool at its exit (once
            # each, shielded); the item tears down on the first.
            tool.aclose = item.close
        return tools

    async def sandbox_for(self, session_id: str) -> Tuple[AsyncSession, bool]:
        """The running sandbox of a Managed Agents session, made if there is
        none; and whether it was made now."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            known = self.sandboxes.get(session_id)
            if known:
                try:
                    s = await self.paddock.sessions.get(known)
                    if s.info and s.info.state == SessionState.RUNNING:
                        return s, False
                except NotFound:
                    pass
            # Another worker process (or this one before a restart) may have made it.
            for s in await self.paddock.sessions.list():
                if s.info and s.info.labels.get(SESSION_LABEL) == session_id and s.info.state == SessionState.RUNNING:
                    self.sandboxes[session_id] = s.id
                    return s, False
            s = await self.paddock.sessions.create(labels={**self._labels, SESSION_LABEL: session_id}, **self._create)
            self.sandboxes[session_id] = s.id
            log.info("sandbox %s made for session %s", s.id, session_id)
            return s, True

    async def new_sandbox(self) -> AsyncSession:
        """A sandbox for a context without a session (deleted at the item's end)."""
        return await self.paddock.sessions.create(labels=dict(self._labels), **self._create)

    async def aclose(self) -> None:
        """Closes the connection (sandboxes stay; the daemon's TTL bounds them)."""
        await self.paddock.close()


def agent_toolset(paddock: Optional[AsyncPaddock] = None, **options: Any) -> PaddockToolset:
    """The tools factory for `anthropic.lib.environments.EnvironmentWorker`::

        from anthropic import AsyncAnthropic
        from anthropic.lib.environments import EnvironmentWorker
        from paddock.anthropic import agent_toolset

        worker = EnvironmentWorker(
            AsyncAnthropic(), environment_id=..., environment_key=...,
            tools=agent_toolset(environment="python-dev", memory="2G", network="none", ttl="24h"),
        )
        await worker.run()

    Args:
        paddock: an `AsyncPaddock` (default: one from ``addr``/``token``, else
            ``$PADDOCK_ADDR``/``$PADDOCK_TOKEN``).
        environment, memory, cpus, pids, disk, network, wait_for_build: the
            sandboxes' settings, as for ``sessions.create``. The network
            defaults to ``"none"``: no Anthropic credential ever enters the
            sandbox, so it needs none.
        ttl: the daemon deletes a sandbox this long after it was made even if
            its session never ends (default ``"24h"``; ``None``: never).
        labels: extra labels on every sandbox.
    """
    return PaddockToolset(paddock, **options)


class _WorkItem:
    """One work item's view of its session's sandbox: set-up, calls, teardown."""

    def __init__(self, toolset: PaddockToolset, ctx: Any) -> None:
        self.toolset = toolset
        self.ctx = ctx
        session = getattr(ctx, "session", None)
        self.ma_session_id: Optional[str] = getattr(session, "id", None) or getattr(ctx, "session_id", None)
        self.host_workdir = Path(getattr(ctx, "workdir", ".") or ".").resolve()
        self.sandbox: Optional[AsyncSession] = None
        self.skills: List[str] = []
        self.mirrors: List[_Mirror] = []
        self.read_only: List[str] = []
        self._closed: Optional[asyncio.Future] = None
        # The worker calls the factory inside its event loop; start the
        # set-up now so it overlaps the runner's own start. (Called outside a
        # loop, the first call starts it.)
        self._ready: Optional[asyncio.Future] = None
        try:
            self._ready = asyncio.get_running_loop().create_task(self._setup())
        except RuntimeError:
            pass

    def _started(self) -> asyncio.Future:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._setup())
        return self._ready

    def sandbox_path(self, host: Path) -> str:
        """Where a host folder under the staging workdir lives in the sandbox
        (the same path under /workspace); a folder elsewhere keeps its path."""
        host = Path(host).resolve()
        try:
            rel = host.relative_to(self.host_workdir)
        except ValueError:
            return str(host)
        return posixpath.join(SANDBOX_WORKDIR, rel.as_posix()) if str(rel) != "." else SANDBOX_WORKDIR

    async def _setup(self) -> None:
        if self.ma_session_id:
            self.sandbox, made = await self.toolset.sandbox_for(self.ma_session_id)
            if not made:
                # A fresh shell per work item, as the SDK builds new tools per item.
                await self.sandbox.tools.bash(restart=True)
        else:
            self.sandbox = await self.toolset.new_sandbox()
        skills = self.host_workdir / "skills"
        if skills.is_dir():
            self.skills = sorted(p.name for p in skills.iterdir() if p.is_dir())
            if self.skills:
                await self.sandbox.files.upload(skills, posixpath.join(SANDBOX_WORKDIR, "skills"))
        for root in getattr(self.ctx, "allowed_roots", None) or []:
            m = _Mirror(self.sandbox, Path(root), self.sandbox_path(Path(root)))
            await m.push_all()
            self.mirrors.append(m)
        self.read_only = [self.sandbox_path(Path(r)) for r in getattr(self.ctx, "read_only_roots", None) or []]

    async def run(self, name: str, tool_input: Dict[str, Any]) -> ToolResult:
        await self._started()
        assert self.sandbox is not None
        if name in ("write", "edit") and self.read_only:
            _refuse_read_only(name, tool_input["file_path"], self.read_only)
        for m in self.mirrors:
            await m.push_changes()
        try:
            result = await self.sandbox.tools.run(name, tool_input)
        except (NotFound, FailedPrecondition):
            # The sandbox went away under the session (its TTL, an operator):
            # the files are gone, but the session can go on in a new one.
            if not self.ma_session_id:
                raise
            log.warning("sandbox %s of session %s is gone; making a new one", self.sandbox.id, self.ma_session_id)
            self._ready = asyncio.get_running_loop().create_task(self._setup())
            await self._ready
            result = await self.sandbox.tools.run(name, tool_input)
        if name in _MUTATING:
            for m in self.mirrors:
                await m.pull()
        return result

    async def close(self) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._teardown())
        await asyncio.shield(self._closed)

    async def _teardown(self) -> None:
        try:
            await self._started()
        except Exception as e:
            log.warning("sandbox set-up had failed: %r", e)
            return
        s = self.sandbox
        assert s is not None
        try:
            for m in self.mirrors:
                await m.pull()
            if not self.ma_session_id:
                await s.delete()
                return
            if await self._session_ended():
                await s.delete()
                self.toolset.sandboxes.pop(self.ma_session_id, None)
                log.info("session %s ended; sandbox %s deleted", self.ma_session_id, s.id)
                return
            for name in self.skills:
                await s.files.remove(posixpath.join(SANDBOX_WORKDIR, "skills", name), recursive=True)
            # The reference kills its shell (and so its jobs) at the end of an item.
            await s.tools.bash(restart=True)
        except NotFound:
            self.toolset.sandboxes.pop(self.ma_session_id or "", None)

    async def _session_ended(self) -> bool:
        client = getattr(self.ctx, "client", None)
        if client is None:
            return False
        try:
            session = await client.beta.sessions.retrieve(self.ma_session_id)
        except Exception as e:  # anthropic.NotFoundError: deleted
            return getattr(e, "status_code", None) == 404
        return getattr(session, "status", None) == "terminated"


def _refuse_read_only(name: str, file_path: str, roots: Sequence[str]) -> None:
    target = posixpath.normpath(file_path if posixpath.isabs(file_path) else posixpath.join(SANDBOX_WORKDIR, file_path))
    for root in roots:
        if target == root or target.startswith(root.rstrip("/") + "/"):
            raise ToolError(f"{name}: {file_path} is inside read-only directory {root}")


def _hash_tree(root: Path) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if not root.is_dir():
        return out
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class _Mirror:
    """A host folder (a memory store) kept equal to its copy in the sandbox:
    host-side changes go in before a call, sandbox-side changes come back
    after one. `known` is the content both sides had at the last exchange."""

    def __init__(self, sandbox: AsyncSession, host: Path, remote: str) -> None:
        self.sandbox = sandbox
        self.host = host
        self.remote = remote
        self.known: Dict[str, str] = {}

    async def push_all(self) -> None:
        try:
            await self.sandbox.files.remove(self.remote, recursive=True)
        except NotFound:
            pass
        await self.sandbox.files.mkdir(self.remote)
        if self.host.is_dir():
            await self.sandbox.files.upload(self.host, self.remote)
        self.known = _hash_tree(self.host)

    async def push_changes(self) -> None:
        now = _hash_tree(self.host)
        if now == self.known:
            return
        for rel, sha in now.items():
            if self.known.get(rel) != sha:
                await self.sandbox.files.write_bytes(posixpath.join(self.remote, rel), (self.host / rel).read_bytes())
        for rel in set(self.known) - set(now):
            try:
                await self.sandbox.files.remove(posixpath.join(self.remote, rel))
            except NotFound:
                pass
        self.known = now

    async def pull(self) -> None:
        staging = Path(tempfile.mkdtemp(prefix=".paddock-pull-", dir=self.host.parent))
        try:
            try:
                await self.sandbox.files.download(self.remote, staging)
            except NotFound:
                pass  # the agent removed the folder: everything in it is gone
            theirs = _hash_tree(staging)
            mine = _hash_tree(self.host)
            for rel, sha in theirs.items():
                if mine.get(rel) != sha:
                    dst = self.host / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / rel, dst)
            for rel in set(mine) - set(theirs):
                (self.host / rel).unlink()
            self.known = theirs
        finally:
            shutil.rmtree(staging, ignore_errors=True)
