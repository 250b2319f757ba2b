"""The asyncio client: `AsyncPaddock`. The same surface as `Paddock`, with
coroutines and async iterators (grpc.aio underneath)."""

from __future__ import annotations

import asyncio
import datetime as _dt
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

import grpc
import grpc.aio

from . import types as t
from ._common import given as _given, to_json as _json, to_list as _list, upload_requests as _upload_requests, write_atomically as _write_atomically
from ._connect import CHUNK, channel_options, resolve, tls_credentials, unreachable_hint
from ._sync import _Stubs
from ._transfer import _END, TarProducer, ThreadQueueIter, untar
from .errors import NotFound, PaddockError, Unavailable, from_rpc_error
from paddock.v1 import code_pb2, environments_pb2, files_pb2, network_pb2, processes_pb2, sessions_pb2, tokens_pb2, tools_pb2

__all__ = ["AsyncPaddock", "AsyncSession", "AsyncProcess"]

T = TypeVar("T")
Duration = Union[int, float, str, _dt.timedelta]


class _AsyncConn:
    def __init__(self, addr: str, target: str, metadata, timeout: Optional[float], creds=None) -> None:
        self.addr = addr
        self.target = target
        self.creds = creds
        self.metadata = metadata
        self.timeout = timeout
        self._channel: Optional[grpc.aio.Channel] = None
        self._stubs: Optional[_Stubs] = None

    @property
    def stubs(self) -> _Stubs:
        # Made on first use: a grpc.aio channel belongs to the event loop that
        # is running when it is made, and AsyncPaddock may be built outside one.
        if self._stubs is None:
            if self.creds is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=channel_options())
            else:
                self._channel = grpc.aio.secure_channel(self.target, self.creds, options=channel_options())
            self._stubs = _Stubs(self._channel)  # type: ignore[arg-type]
        return self._stubs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None

    def _error(self, e: grpc.RpcError) -> PaddockError:
        err = from_rpc_error(e)
        if isinstance(err, Unavailable):
            err.message = f"{unreachable_hint(self.addr)}: {err.message}"
        return err

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, timeout: Optional[float] = None) -> T:
        try:
            return await method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    async def stream(self, method: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        """A server stream whose failures raise typed errors; closing the
        async iterator (or cancelling its consumer) cancels the call."""
        call = method(request, metadata=self.metadata)
        try:
            async for m in call:
                yield m
        except grpc.RpcError as e:
            raise self._error(e) from None
        finally:
            call.cancel()


class AsyncPaddock:
    """An asyncio connection to paddockd; arguments as for `Paddock`.

    Example::

        async with AsyncPaddock() as pd:
            async with await pd.sessions.create(memory="1G") as s:
                print((await s.exec("echo hi")).text)
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ):
        a, target, md = resolve(addr, token)
        self._conn = _AsyncConn(a, target, md, timeout, tls_credentials(a, tls_ca, tls_cert, tls_key))
        self.addr = a
        self.sessions = AsyncSessions(self._conn)
        self.environments = AsyncEnvironments(self._conn)
        self.tokens = AsyncTokens(self._conn)

    def session(self, session_id: str) -> "AsyncSession":
        """A handle on an existing session (no call is made)."""
        return AsyncSession(self._conn, session_id)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> "AsyncPaddock":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSessions:
    def __init__(self, conn: _AsyncConn) -> None:
        self._c = conn

    async def create(
        self,
        *,
        memory: Union[int, str, None] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        disk: Union[int, str, None] = None,
        ttl: Optional[Duration] = None,
        environment: Optional[str] = None,
        network: Optional[t.NetworkLike] = None,
        labels: Optional[Mapping[str, str]] = None,
        wait_for_build: bool = False,
        resources: Optional[Mapping[str, Union[bytes, str]]] = None,
        idle_timeout: Optional[Duration] = None,
        idle_action: Optional[str] = None,
        auto_resume: bool = False,
    ) -> "AsyncSession":
        """Starts a sandbox; arguments as for `Paddock.sessions.create`."""
        req = t.create_session_request(
            memory=memory, cpus=cpus, pids=pids, disk=disk, ttl=ttl, environment=environment,
            network=network, labels=labels, wait_for_build=wait_for_build, resources=resources,
            idle_timeout=idle_timeout, idle_action=idle_action, auto_resume=auto_resume,
        )
        info = t.SessionInfo.from_proto(await self._c.call(self._c.stubs.sessions.CreateSession, req))
        return AsyncSession(self._c, info.id, info)

    async def get(self, session_id: str) -> "AsyncSession":
        m = await self._c.call(self._c.stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=session_id))
        return AsyncSession(self._c, session_id, t.SessionInfo.from_proto(m))

    async def list(self) -> List["AsyncSession"]:
        r = await self._c.call(self._c.stubs.sessions.ListSessions, sessions_pb2.ListSessionsRequest())
        return [AsyncSession(self._c, s.id, t.SessionInfo.from_proto(s)) for s in r.sessions]


class AsyncSession:
    """A sandbox; ``async with`` deletes it on exit."""

    def __init__(self, conn: _AsyncConn, session_id: str, info: Optional[t.SessionInfo] = None) -> None:
        self._c = conn
        self.id = session_id
        self.info = info
        self.tools = AsyncTools(conn, session_id)
        self.files = AsyncFiles(conn, session_id)
        self.processes = AsyncProcesses(conn, session_id)
        self.code = AsyncCode(conn, session_id)
        self.network = AsyncNetwork(conn, session_id)

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def refresh(self) -> t.SessionInfo:
        m = await self._c.call(self._c.stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=self.id))
        self.info = t.SessionInfo.from_proto(m)
        return self.info

    async def exec(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[Duration] = None,
        output_limit: Union[int, str, None] = None,
    ) -> t.ExecResult:
        """Runs a command to completion: a string goes to ``/bin/sh -c``, a list is argv."""
        req = t.exec_request(self.id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout, output_limit=output_limit)
        return t.ExecResult.from_proto(await self._c.call(self._c.stubs.sessions.Exec, req))

    async def exec_stream(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[Duration] = None,
        output_limit: Union[int, str, None] = None,
    ) -> AsyncIterator[t.ExecEvent]:
        """Streams stdout/stderr chunks as they are written; the last event has ``exit``."""
        req = t.exec_request(self.id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout, output_limit=output_limit)
        async for m in self._c.stream(self._c.stubs.sessions.ExecStream, req):
            yield t.ExecEvent.from_proto(m)

    async def stop(self) -> t.SessionInfo:
        m = await self._c.call(self._c.stubs.sessions.StopSession, sessions_pb2.StopSessionRequest(session_id=self.id))
        self.info = t.SessionInfo.from_proto(m)
        return self.info

    async def pause(self) -> t.SessionInfo:
        m = await self._c.call(self._c.stubs.sessions.PauseSession, sessions_pb2.PauseSessionRequest(session_id=self.id))
        self.info = t.SessionInfo.from_proto(m)
        return self.info

    async def resume(self) -> t.SessionInfo:
        m = await self._c.call(self._c.stubs.sessions.ResumeSession, sessions_pb2.ResumeSessionRequest(session_id=self.id))
        self.info = t.SessionInfo.from_proto(m)
        return self.info

    async def set_ttl(self, ttl: Optional[Duration]) -> t.SessionInfo:
        """Replaces the session's TTL, counted from now; ``None``: no TTL."""
        m = await self._c.call(self._c.stubs.sessions.SetSessionTtl, t.set_ttl_request(self.id, ttl))
        self.info = t.SessionInfo.from_proto(m)
        return self.info

    async def delete(self) -> None:
        await self._c.call(self._c.stubs.sessions.DeleteSession, sessions_pb2.DeleteSessionRequest(session_id=self.id))

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.delete()
        except NotFound:
            pass  # already gone (its TTL, or someone else deleted it)


class AsyncTools:
    """The agent toolset; see `paddock.Session.tools`."""

    def __init__(self, conn: _AsyncConn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    async def run(self, name: str, input: Mapping[str, Any]) -> t.ToolResult:
        req = tools_pb2.RunToolRequest(session_id=self._id, name=name, input_json=_json(input))
        return t.ToolResult.from_proto(await self._c.call(self._c.stubs.tools.RunTool, req))

    async def bash(self, command: Optional[str] = None, *, restart: Optional[bool] = None, timeout_ms: Optional[int] = None) -> t.ToolResult:
        return await self.run("bash", _given(command=command, restart=restart, timeout_ms=timeout_ms))

    async def read(self, file_path: str, view_range: Optional[Sequence[int]] = None) -> t.ToolResult:
        return await self.run("read", _given(file_path=file_path, view_range=_list(view_range)))

    async def write(self, file_path: str, content: str) -> t.ToolResult:
        return await self.run("write", {"file_path": file_path, "content": content})

    async def edit(self, file_path: str, old_string: str, new_string: str, replace_all: Optional[bool] = None) -> t.ToolResult:
        return await self.run("edit", _given(file_path=file_path, old_string=old_string, new_string=new_string, replace_all=replace_all))

    async def glob(self, pattern: str, path: Optional[str] = None) -> t.ToolResult:
        return await self.run("glob", _given(pattern=pattern, path=path))

    async def grep(self, pattern: str, path: Optional[str] = None) -> t.ToolResult:
        return await self.run("grep", _given(pattern=pattern, path=path))


async def _to_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class AsyncFiles:
    """Files in the session; see `paddock.Session.files`."""

    def __init__(self, conn: _AsyncConn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    @property
    def _f(self):
        return self._c.stubs.files

    async def stat(self, path: str) -> t.FileInfo:
        return t.FileInfo.from_proto(await self._c.call(self._f.Stat, files_pb2.StatRequest(session_id=self._id, path=path)))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
            return True
        except NotFound:
            return False

    async def list(self, path: str = ".", *, depth: int = 1) -> List[t.FileInfo]:
        r = await self._c.call(self._f.ListDir, files_pb2.ListDirRequest(session_id=self._id, path=path, depth=depth))
        return [t.FileInfo.from_proto(e) for e in r.entries]

    async def mkdir(self, path: str) -> t.FileInfo:
        return t.FileInfo.from_proto(await self._c.call(self._f.MakeDir, files_pb2.MakeDirRequest(session_id=self._id, path=path)))

    async def move(self, src: str, dst: str, *, overwrite: bool = False) -> t.FileInfo:
        req = files_pb2.MoveRequest(session_id=self._id, overwrite=overwrite, to=dst)
        setattr(req, "from", src)  # `from` is a Python keyword
        return t.FileInfo.from_proto(await self._c.call(self._f.Move, req))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._c.call(self._f.Remove, files_pb2.RemoveRequest(session_id=self._id, path=path, recursive=recursive))

    async def read_bytes(self, path: str) -> bytes:
        return b"".join([c async for c in self.download_chunks(path)])

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read_bytes(path)).decode(encoding)

    async def write_bytes(self, path: str, data: bytes, *, mode: int = 0) -> t.FileInfo:
        view = memoryview(data)
        return await self.upload_chunks(path, (view[i : i + CHUNK].tobytes() for i in range(0, len(view), CHUNK)), mode=mode)

    async def write_text(self, path: str, text: str, *, mode: int = 0, encoding: str = "utf-8") -> t.FileInfo:
        return await self.write_bytes(path, text.encode(encoding), mode=mode)

    async def upload_chunks(self, path: str, chunks: Any, *, tar: bool = False, mode: int = 0) -> t.FileInfo:
        """Uploads a stream of bytes (an iterable or async iterable)."""
        if hasattr(chunks, "__aiter__"):
            reqs: Any = _aupload_requests(self._id, path, chunks, tar, mode)
        else:
            reqs = _upload_requests(self._id, path, chunks, tar, mode)
        return t.FileInfo.from_proto(await self._c.call(self._f.Upload, reqs))

    async def upload(self, local: Union[str, Path], path: str, *, mode: Optional[int] = None) -> t.FileInfo:
        """Uploads a local file, or a local directory's contents into directory `path`, streamed
        (local reads run on a thread, off the event loop)."""
        local = Path(local)
        if local.is_dir():
            producer = TarProducer(local)

            async def tar_chunks():
                while True:
                    item = await _to_thread(producer.get)
                    if item is _END:
                        if producer.error:
                            raise producer.error
                        return
                    yield item

            return await self.upload_chunks(path, tar_chunks(), tar=True)
        m = mode if mode is not None else local.stat().st_mode & 0o7777
        f = await _to_thread(open, local, "rb")
        try:

            async def file_chunks():
                while True:
                    b = await _to_thread(f.read, CHUNK)
                    if not b:
                        return
                    yield b

            return await self.upload_chunks(path, file_chunks(), mode=m)
        finally:
            f.close()

    async def download_chunks(self, path: str) -> AsyncIterator[bytes]:
        async for m in self._c.stream(self._f.Download, files_pb2.DownloadRequest(session_id=self._id, path=path)):
            if m.data:
                yield m.data

    async def download(self, path: str, local: Union[str, Path]) -> t.FileInfo:
        """Downloads a file to `local` (atomically), or a directory's contents into directory `local`."""
        local = Path(local)
        stream = self._c.stream(self._f.Download, files_pb2.DownloadRequest(session_id=self._id, path=path))
        first = await stream.__anext__()
        info = t.FileInfo.from_proto(first.info)
        # The local side (writing, unpacking) runs on a thread fed by this loop.
        feed = ThreadQueueIter()
        sink = _to_thread(untar, feed, local) if info.is_dir else _to_thread(_write_atomically, local, feed)
        sink_task = asyncio.ensure_future(sink)
        try:
            if first.data:
                await _to_thread(feed.put, first.data)
            async for m in stream:
                if m.data:
                    await _to_thread(feed.put, m.data)
            feed.close()
        except BaseException as e:
            # Let the writer thread see the failure and clean up (a file's
            # temporary name is removed) before the error goes on.
            feed.close(e if isinstance(e, Exception) else RuntimeError("download cancelled"))
            await asyncio.gather(sink_task, return_exceptions=True)
            raise
        await sink_task
        return info

    async def watch(self, path: str, *, recursive: bool = False) -> AsyncIterator[t.WatchEvent]:
        req = files_pb2.WatchRequest(session_id=self._id, path=path, recursive=recursive)
        async for m in self._c.stream(self._f.Watch, req):
            yield t.WatchEvent.from_proto(m)


async def _aupload_requests(session_id: str, path: str, chunks: Any, tar: bool, mode: int):
    yield files_pb2.UploadRequest(header=files_pb2.UploadHeader(session_id=session_id, path=path, tar=tar, mode=mode))
    async for c in chunks:
        yield files_pb2.UploadRequest(data=c)
    yield files_pb2.UploadRequest(finish=True)


class AsyncProcesses:
    def __init__(self, conn: _AsyncConn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    async def start(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        pty: Union[bool, Sequence[int]] = False,
        tag: Optional[str] = None,
        timeout: Optional[Duration] = None,
    ) -> "AsyncProcess":
        req = t.start_process_request(self._id, command, cwd=cwd, env=env, user=user, pty=pty, tag=tag, timeout=timeout)
        info = t.ProcessInfo.from_proto(await self._c.call(self._c.stubs.processes.StartProcess, req))
        return AsyncProcess(self._c, self._id, info.pid, info)

    def get(self, pid_or_tag: Union[int, str]) -> "AsyncProcess":
        if isinstance(pid_or_tag, int):
            return AsyncProcess(self._c, self._id, pid_or_tag)
        return AsyncProcess(self._c, self._id, 0, tag=pid_or_tag)

    async def list(self) -> List[t.ProcessInfo]:
        r = await self._c.call(self._c.stubs.processes.ListProcesses, processes_pb2.ListProcessesRequest(session_id=self._id))
        return [t.ProcessInfo.from_proto(p) for p in r.processes]


class AsyncProcess:
    def __init__(self, conn: _AsyncConn, session_id: str, pid: int, info: Optional[t.ProcessInfo] = None, tag: str = "") -> None:
        self._c = conn
        self._session = session_id
        self.pid = pid
        self.tag = tag or (info.tag if info else "")
        self.info = info

    def _target(self) -> Dict[str, Any]:
        return {"pid": self.pid} if self.pid else {"tag": self.tag}

    def __repr__(self) -> str:
        return f"AsyncProcess(pid={self.pid}, tag={self.tag!r})"

    async def attach(self, *, offset: int = 0, follow: bool = True) -> AsyncIterator[t.ProcessEvent]:
        req = processes_pb2.AttachProcessRequest(session_id=self._session, offset=offset, no_follow=not follow, **self._target())
        async for m in self._c.stream(self._c.stubs.processes.AttachProcess, req):
            yield t.ProcessEvent.from_proto(m)

    async def wait(self) -> t.ProcessInfo:
        async for ev in self.attach(offset=2**63 - 1):
            if ev.exit is not None:
                self.info = ev.exit
                return ev.exit
        raise PaddockError("the process stream ended without an exit event")

    async def write_stdin(self, data: Union[bytes, str], *, close: bool = False) -> None:
        data = data.encode() if isinstance(data, str) else data
        req = processes_pb2.WriteStdinRequest(session_id=self._session, data=data, close=close, **self._target())
        await self._c.call(self._c.stubs.processes.WriteStdin, req)

    async def close_stdin(self) -> None:
        await self.write_stdin(b"", close=True)

    async def resize(self, rows: int, cols: int) -> None:
        req = processes_pb2.ResizePtyRequest(session_id=self._session, size=processes_pb2.PtySize(rows=rows, cols=cols), **self._target())
        await self._c.call(self._c.stubs.processes.ResizePty, req)

    async def signal(self, signal: int = 15, *, group: bool = False) -> None:
        req = processes_pb2.SignalProcessRequest(session_id=self._session, signal=int(signal), group=group, **self._target())
        await self._c.call(self._c.stubs.processes.SignalProcess, req)

    async def kill(self) -> None:
        await self.signal(9, group=True)


class AsyncCode:
    def __init__(self, conn: _AsyncConn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    async def run(self, code: str, *, language: str = "python", context: Optional[str] = None, timeout: Optional[Duration] = None) -> t.CodeResult:
        req = t.run_code_request(self._id, code, language=language, context=context, timeout=timeout)
        return t.CodeResult.from_proto(await self._c.call(self._c.stubs.code.RunCode, req))

    async def create_context(self, language: str = "python") -> t.CodeContext:
        m = await self._c.call(self._c.stubs.code.CreateContext, code_pb2.CreateContextRequest(session_id=self._id, language=language))
        return t.CodeContext.from_proto(m)

    async def contexts(self) -> List[t.CodeContext]:
        r = await self._c.call(self._c.stubs.code.ListContexts, code_pb2.ListContextsRequest(session_id=self._id))
        return [t.CodeContext.from_proto(c) for c in r.contexts]

    async def restart_context(self, context_id: str) -> t.CodeContext:
        m = await self._c.call(self._c.stubs.code.RestartContext, code_pb2.ContextRequest(session_id=self._id, context_id=context_id))
        return t.CodeContext.from_proto(m)

    async def delete_context(self, context_id: str) -> None:
        await self._c.call(self._c.stubs.code.DeleteContext, code_pb2.ContextRequest(session_id=self._id, context_id=context_id))


class AsyncNetwork:
    def __init__(self, conn: _AsyncConn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    async def get(self) -> t.NetworkStatus:
        m = await self._c.call(self._c.stubs.sessions.GetNetwork, network_pb2.GetNetworkRequest(session_id=self._id))
        return t.NetworkStatus.from_proto(m)

    async def update(self, network: t.NetworkLike) -> t.NetworkStatus:
        req = network_pb2.UpdateNetworkRequest(session_id=self._id, network=t.NetworkPolicy.coerce(network).to_proto())
        return t.NetworkStatus.from_proto(await self._c.call(self._c.stubs.sessions.UpdateNetwork, req))


class AsyncEnvironments:
    def __init__(self, conn: _AsyncConn) -> None:
        self._c = conn

    async def create(self, name: str, *, packages: Optional[Mapping[str, Sequence[str]]] = None, env: Optional[Mapping[str, str]] = None, description: str = "", network: Optional[t.NetworkLike] = None):
        req = t.create_environment_request(name, packages=packages, env=env, description=description, network=network)
        return await self._c.call(self._c.stubs.environments.CreateEnvironment, req)

    async def get(self, environment: str):
        return await self._c.call(self._c.stubs.environments.GetEnvironment, environments_pb2.GetEnvironmentRequest(environment=environment))

    async def list(self):
        r = await self._c.call(self._c.stubs.environments.ListEnvironments, environments_pb2.ListEnvironmentsRequest())
        return list(r.environments)

    async def delete(self, environment: str) -> None:
        await self._c.call(self._c.stubs.environments.DeleteEnvironment, environments_pb2.DeleteEnvironmentRequest(environment=environment))

    def build(self, environment: str) -> AsyncIterator[Any]:
        return self._c.stream(self._c.stubs.environments.BuildEnvironment, environments_pb2.BuildEnvironmentRequest(environment=environment))


class AsyncTokens:
    def __init__(self, conn: _AsyncConn) -> None:
        self._c = conn

    async def create(self, name: str, *, tenant: str = ""):
        return await self._c.call(self._c.stubs.tokens.CreateToken, tokens_pb2.CreateTokenRequest(name=name, tenant=tenant))

    async def list(self):
        return list((await self._c.call(self._c.stubs.tokens.ListTokens, tokens_pb2.ListTokensRequest())).tokens)

    async def delete(self, name: str) -> None:
        await self._c.call(self._c.stubs.tokens.DeleteToken, tokens_pb2.DeleteTokenRequest(name=name))
