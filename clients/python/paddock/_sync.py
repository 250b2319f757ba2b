"""The blocking client: `Paddock`."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

import grpc

from . import types as t
from ._connect import CHUNK, channel_options, resolve, tls_credentials, unreachable_hint
from ._transfer import TarProducer, file_chunks, untar
from ._common import given as _given, to_json as _json, to_list as _list, upload_requests as _upload_requests, write_atomically as _write_atomically
from .errors import NotFound, PaddockError, Unavailable, from_rpc_error
from paddock.v1 import (
    code_pb2,
    code_pb2_grpc,
    environments_pb2,
    environments_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    network_pb2,
    processes_pb2,
    processes_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)

__all__ = ["Paddock", "Session", "Process"]

T = TypeVar("T")
Duration = Union[int, float, str, _dt.timedelta]


class _Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.sessions = sessions_pb2_grpc.SessionsStub(channel)
        self.tools = tools_pb2_grpc.ToolsStub(channel)
        self.files = files_pb2_grpc.FilesStub(channel)
        self.processes = processes_pb2_grpc.ProcessesStub(channel)
        self.code = code_pb2_grpc.CodeStub(channel)
        self.environments = environments_pb2_grpc.EnvironmentsStub(channel)
        self.tokens = tokens_pb2_grpc.TokensStub(channel)


class _Conn:
    """One channel, its stubs and the call metadata; every call goes through `call`/`stream`."""

    def __init__(self, addr: str, target: str, metadata, timeout: Optional[float], creds=None) -> None:
        self.addr = addr
        if creds is None:
            self.channel = grpc.insecure_channel(target, options=channel_options())
        else:
            self.channel = grpc.secure_channel(target, creds, options=channel_options())
        self.stubs = _Stubs(self.channel)
        self.metadata = metadata
        self.timeout = timeout

    def _error(self, e: grpc.RpcError) -> PaddockError:
        err = from_rpc_error(e)
        if isinstance(err, Unavailable):
            err.message = f"{unreachable_hint(self.addr)}: {err.message}"
        return err

    def call(self, method: Callable[..., T], request: Any, timeout: Optional[float] = None) -> T:
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def stream(self, method: Callable[..., Any], request: Any) -> Iterator[Any]:
        """A server stream whose failures raise typed errors; closing the
        iterator (or dropping it) cancels the call."""
        call = method(request, metadata=self.metadata)
        try:
            for m in call:
                yield m
        except grpc.RpcError as e:
            raise self._error(e) from None
        finally:
            call.cancel()


class Paddock:
    """A connection to paddockd.

    Args:
        addr: ``unix:/path``, ``HOST:PORT`` or ``http://HOST:PORT``; default
            ``$PADDOCK_ADDR``, else ``unix:/var/lib/paddock/paddockd.sock``.
        token: an API token (``paddock token create``), sent as
            ``authorization: Bearer ...``; default ``$PADDOCK_TOKEN``. Root on
            the unix socket needs none; every TCP call does.
        timeout: default deadline in seconds for unary calls (none by default:
            a command's own ``timeout`` bounds Exec).

    Example::

        from paddock import Paddock

        with Paddock() as pd, pd.sessions.create(memory="1G", ttl="1h") as s:
            print(s.exec("echo hi").text)
            print(s.tools.bash(command="ls /").text)
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
        self._conn = _Conn(a, target, md, timeout, tls_credentials(a, tls_ca, tls_cert, tls_key))
        self.addr = a
        self.sessions = Sessions(self._conn)
        self.environments = Environments(self._conn)
        self.tokens = Tokens(self._conn)

    def session(self, session_id: str) -> "Session":
        """A handle on an existing session (no call is made)."""
        return Session(self._conn, session_id)

    def close(self) -> None:
        self._conn.channel.close()

    def __enter__(self) -> "Paddock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sessions:
    def __init__(self, conn: _Conn) -> None:
        self._c = conn

    def create(
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
    ) -> "Session":
        """Starts a sandbox; returns once it accepts tool calls.

        Args:
            memory: ``"1G"``, ``"512M"`` or bytes. Unset limits take the daemon's defaults.
            cpus: CPU bandwidth in cores (``0.5``).
            pids: process/thread limit.
            disk: disk limit for what the session writes (``"2G"``).
            ttl: the daemon deletes the session after this long (``"1h"``, seconds, timedelta).
            environment: an environment's name or id (default: the base image).
            network: ``"none"``, ``"limited"``, ``"unrestricted"``, a dict such as
                ``{"allowed_hosts": ["api.example.com"]}`` (limited), or a `NetworkPolicy`.
            labels: free-form labels, returned with the session.
            wait_for_build: build the environment first if it is not built.
            resources: files placed read-only under ``/mnt/session/uploads/``: ``{path: content}``.
            idle_timeout: stop (or pause) the session after this long without a tool call
                (``"5m"``); ``0``: never; unset: the daemon's default.
            idle_action: ``"stop"`` (default) or ``"pause"``.
            auto_resume: a tool call on the paused session resumes it first.
        """
        req = t.create_session_request(
            memory=memory, cpus=cpus, pids=pids, disk=disk, ttl=ttl, environment=environment,
            network=network, labels=labels, wait_for_build=wait_for_build, resources=resources,
            idle_timeout=idle_timeout, idle_action=idle_action, auto_resume=auto_resume,
        )
        info = t.SessionInfo.from_proto(self._c.call(self._c.stubs.sessions.CreateSession, req))
        return Session(self._c, info.id, info)

    def get(self, session_id: str) -> "Session":
        m = self._c.call(self._c.stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=session_id))
        return Session(self._c, session_id, t.SessionInfo.from_proto(m))

    def list(self) -> List["Session"]:
        r = self._c.call(self._c.stubs.sessions.ListSessions, sessions_pb2.ListSessionsRequest())
        return [Session(self._c, s.id, t.SessionInfo.from_proto(s)) for s in r.sessions]


class Session:
    """A sandbox. Use as a context manager to delete it on exit::

        with pd.sessions.create() as s:
            s.exec(["ls", "-la"])
    """

    def __init__(self, conn: _Conn, session_id: str, info: Optional[t.SessionInfo] = None) -> None:
        self._c = conn
        self.id = session_id
        self._info = info
        self.tools = Tools(conn, session_id)
        self.files = Files(conn, session_id)
        self.processes = Processes(conn, session_id)
        self.code = Code(conn, session_id)
        self.network = Network(conn, session_id)

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    @property
    def info(self) -> t.SessionInfo:
        """The daemon's view of the session, as of the last `refresh` (fetched on first use)."""
        if self._info is None:
            self.refresh()
        assert self._info is not None
        return self._info

    def refresh(self) -> t.SessionInfo:
        m = self._c.call(self._c.stubs.sessions.GetSession, sessions_pb2.GetSessionRequest(session_id=self.id))
        self._info = t.SessionInfo.from_proto(m)
        return self._info

    def exec(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[Duration] = None,
        output_limit: Union[int, str, None] = None,
    ) -> t.ExecResult:
        """Runs a command to completion: a string goes to ``/bin/sh -c``, a list is argv.

        A non-zero exit is not an exception: look at ``exit_code`` (or ``ok``).
        """
        req = t.exec_request(self.id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout, output_limit=output_limit)
        return t.ExecResult.from_proto(self._c.call(self._c.stubs.sessions.Exec, req))

    def exec_stream(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[bytes, str, None] = None,
        timeout: Optional[Duration] = None,
        output_limit: Union[int, str, None] = None,
    ) -> Iterator[t.ExecEvent]:
        """Like `exec`, streaming stdout/stderr chunks as they are written; the last event has ``exit``."""
        req = t.exec_request(self.id, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout, output_limit=output_limit)
        for m in self._c.stream(self._c.stubs.sessions.ExecStream, req):
            yield t.ExecEvent.from_proto(m)

    def stop(self) -> t.SessionInfo:
        """Ends the sandbox; the session (and /mnt/session/outputs) stays until `delete`."""
        m = self._c.call(self._c.stubs.sessions.StopSession, sessions_pb2.StopSessionRequest(session_id=self.id))
        self._info = t.SessionInfo.from_proto(m)
        return self._info

    def pause(self) -> t.SessionInfo:
        """Freezes every process (memory kept, no CPU) until `resume`; tool calls fail meanwhile
        (`paddock.FailedPrecondition`) unless the session was created with ``auto_resume``."""
        m = self._c.call(self._c.stubs.sessions.PauseSession, sessions_pb2.PauseSessionRequest(session_id=self.id))
        self._info = t.SessionInfo.from_proto(m)
        return self._info

    def resume(self) -> t.SessionInfo:
        """Thaws a paused session: its processes go on where they stopped."""
        m = self._c.call(self._c.stubs.sessions.ResumeSession, sessions_pb2.ResumeSessionRequest(session_id=self.id))
        self._info = t.SessionInfo.from_proto(m)
        return self._info

    def set_ttl(self, ttl: Optional[Duration]) -> t.SessionInfo:
        """Replaces the session's TTL, counted from now (``"1h"``, seconds, timedelta);
        ``None``: no TTL. ``info.expires_at_ms`` shows the new deadline (0: none)."""
        m = self._c.call(self._c.stubs.sessions.SetSessionTtl, t.set_ttl_request(self.id, ttl))
        self._info = t.SessionInfo.from_proto(m)
        return self._info

    def delete(self) -> None:
        self._c.call(self._c.stubs.sessions.DeleteSession, sessions_pb2.DeleteSessionRequest(session_id=self.id))

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.delete()
        except NotFound:
            pass  # already gone (its TTL, or someone else deleted it)


class Tools:
    """The agent toolset (bash, read, write, edit, glob, grep), with the inputs,
    results and error texts of the anthropic SDK's reference tools. A tool that
    fails the way tools fail (missing file, non-zero exit, ...) returns a result
    with ``is_error``; only calls that cannot run at all raise."""

    def __init__(self, conn: _Conn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    def run(self, name: str, input: Mapping[str, Any]) -> t.ToolResult:
        """Runs tool `name` with the model's `input` (a JSON object)."""
        req = tools_pb2.RunToolRequest(session_id=self._id, name=name, input_json=_json(input))
        return t.ToolResult.from_proto(self._c.call(self._c.stubs.tools.RunTool, req))

    def bash(self, command: Optional[str] = None, *, restart: Optional[bool] = None, timeout_ms: Optional[int] = None) -> t.ToolResult:
        return self.run("bash", _given(command=command, restart=restart, timeout_ms=timeout_ms))

    def read(self, file_path: str, view_range: Optional[Sequence[int]] = None) -> t.ToolResult:
        return self.run("read", _given(file_path=file_path, view_range=_list(view_range)))

    def write(self, file_path: str, content: str) -> t.ToolResult:
        return self.run("write", {"file_path": file_path, "content": content})

    def edit(self, file_path: str, old_string: str, new_string: str, replace_all: Optional[bool] = None) -> t.ToolResult:
        return self.run("edit", _given(file_path=file_path, old_string=old_string, new_string=new_string, replace_all=replace_all))

    def glob(self, pattern: str, path: Optional[str] = None) -> t.ToolResult:
        return self.run("glob", _given(pattern=pattern, path=path))

    def grep(self, pattern: str, path: Optional[str] = None) -> t.ToolResult:
        return self.run("grep", _given(pattern=pattern, path=path))


class Files:
    """Files in the session. Paths are absolute in the sandbox or relative to /workspace."""

    def __init__(self, conn: _Conn, session_id: str) -> None:
        self._c = conn
        self._id = session_id
        self._f = conn.stubs.files

    def stat(self, path: str) -> t.FileInfo:
        return t.FileInfo.from_proto(self._c.call(self._f.Stat, files_pb2.StatRequest(session_id=self._id, path=path)))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def list(self, path: str = ".", *, depth: int = 1) -> List[t.FileInfo]:
        """Entries of a directory, down to `depth` levels."""
        r = self._c.call(self._f.ListDir, files_pb2.ListDirRequest(session_id=self._id, path=path, depth=depth))
        return [t.FileInfo.from_proto(e) for e in r.entries]

    def mkdir(self, path: str) -> t.FileInfo:
        return t.FileInfo.from_proto(self._c.call(self._f.MakeDir, files_pb2.MakeDirRequest(session_id=self._id, path=path)))

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> t.FileInfo:
        req = files_pb2.MoveRequest(session_id=self._id, overwrite=overwrite, to=dst)
        setattr(req, "from", src)  # `from` is a Python keyword
        return t.FileInfo.from_proto(self._c.call(self._f.Move, req))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self._c.call(self._f.Remove, files_pb2.RemoveRequest(session_id=self._id, path=path, recursive=recursive))

    def read_bytes(self, path: str) -> bytes:
        return b"".join(self.download_chunks(path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

    def write_bytes(self, path: str, data: bytes, *, mode: int = 0) -> t.FileInfo:
        """Writes a file atomically (a temporary name, renamed into place at the end)."""
        view = memoryview(data)
        return self.upload_chunks(path, (view[i : i + CHUNK].tobytes() for i in range(0, len(view), CHUNK)), mode=mode)

    def write_text(self, path: str, text: str, *, mode: int = 0, encoding: str = "utf-8") -> t.FileInfo:
        return self.write_bytes(path, text.encode(encoding), mode=mode)

    def upload_chunks(self, path: str, chunks: Iterator[bytes], *, tar: bool = False, mode: int = 0) -> t.FileInfo:
        """Uploads a stream of bytes (a file's, or with ``tar`` an archive unpacked into directory `path`)."""
        return t.FileInfo.from_proto(self._c.call(self._f.Upload, _upload_requests(self._id, path, chunks, tar, mode)))

    def upload(self, local: Union[str, Path], path: str, *, mode: Optional[int] = None) -> t.FileInfo:
        """Uploads a local file, or a local directory's contents into directory `path`, streamed."""
        local = Path(local)
        if local.is_dir():
            return self.upload_chunks(path, iter(TarProducer(local)), tar=True)
        with open(local, "rb") as f:
            m = mode if mode is not None else local.stat().st_mode & 0o7777
            return self.upload_chunks(path, file_chunks(f), mode=m)

    def download_chunks(self, path: str) -> Iterator[bytes]:
        """The file's bytes (or a directory as a tar archive), as they arrive."""
        for m in self._c.stream(self._f.Download, files_pb2.DownloadRequest(session_id=self._id, path=path)):
            if m.data:
                yield m.data

    def download(self, path: str, local: Union[str, Path]) -> t.FileInfo:
        """Downloads a file to `local`, or a directory's contents into directory `local`, streamed.

        A file is written next to `local` under a temporary name and renamed
        into place when complete."""
        local = Path(local)
        stream = self._c.stream(self._f.Download, files_pb2.DownloadRequest(session_id=self._id, path=path))
        first = next(stream)
        info = t.FileInfo.from_proto(first.info)

        def chunks() -> Iterator[bytes]:
            if first.data:
                yield first.data
            for m in stream:
                if m.data:
                    yield m.data

        if info.is_dir:
            untar(chunks(), local)
        else:
            _write_atomically(local, chunks())
        return info

    def watch(self, path: str, *, recursive: bool = False) -> Iterator[t.WatchEvent]:
        """Changes under a directory as they happen; close the iterator to stop."""
        req = files_pb2.WatchRequest(session_id=self._id, path=path, recursive=recursive)
        for m in self._c.stream(self._f.Watch, req):
            yield t.WatchEvent.from_proto(m)


class Processes:
    """Background processes: started, streamed, written to, signalled and
    reattached (by pid or tag) with their output replayed from an offset."""

    def __init__(self, conn: _Conn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    def start(
        self,
        command: Union[str, Sequence[str]],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        pty: Union[bool, Sequence[int]] = False,
        tag: Optional[str] = None,
        timeout: Optional[Duration] = None,
    ) -> "Process":
        """Starts a process (a string goes to ``/bin/sh -c``). ``pty=True`` or
        ``pty=(rows, cols)`` runs it on a terminal."""
        req = t.start_process_request(self._id, command, cwd=cwd, env=env, user=user, pty=pty, tag=tag, timeout=timeout)
        info = t.ProcessInfo.from_proto(self._c.call(self._c.stubs.processes.StartProcess, req))
        return Process(self._c, self._id, info.pid, info)

    def get(self, pid_or_tag: Union[int, str]) -> "Process":
        """A handle on a process by pid or tag (no call is made)."""
        if isinstance(pid_or_tag, int):
            return Process(self._c, self._id, pid_or_tag)
        return Process(self._c, self._id, 0, tag=pid_or_tag)

    def list(self) -> List[t.ProcessInfo]:
        r = self._c.call(self._c.stubs.processes.ListProcesses, processes_pb2.ListProcessesRequest(session_id=self._id))
        return [t.ProcessInfo.from_proto(p) for p in r.processes]


class Process:
    def __init__(self, conn: _Conn, session_id: str, pid: int, info: Optional[t.ProcessInfo] = None, tag: str = "") -> None:
        self._c = conn
        self._session = session_id
        self.pid = pid
        self.tag = tag or (info.tag if info else "")
        self.info = info

    def _target(self) -> Dict[str, Any]:
        return {"pid": self.pid} if self.pid else {"tag": self.tag}

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, tag={self.tag!r})"

    def attach(self, *, offset: int = 0, follow: bool = True) -> Iterator[t.ProcessEvent]:
        """Output from byte `offset` on, then live output (with `follow`), then the exit event."""
        req = processes_pb2.AttachProcessRequest(session_id=self._session, offset=offset, no_follow=not follow, **self._target())
        for m in self._c.stream(self._c.stubs.processes.AttachProcess, req):
            yield t.ProcessEvent.from_proto(m)

    def wait(self) -> t.ProcessInfo:
        """Follows the process to its end; returns its final info (output is discarded)."""
        for ev in self.attach(offset=2**63 - 1):
            if ev.exit is not None:
                self.info = ev.exit
                return ev.exit
        raise PaddockError("the process stream ended without an exit event")

    def write_stdin(self, data: Union[bytes, str], *, close: bool = False) -> None:
        data = data.encode() if isinstance(data, str) else data
        req = processes_pb2.WriteStdinRequest(session_id=self._session, data=data, close=close, **self._target())
        self._c.call(self._c.stubs.processes.WriteStdin, req)

    def close_stdin(self) -> None:
        self.write_stdin(b"", close=True)

    def resize(self, rows: int, cols: int) -> None:
        req = processes_pb2.ResizePtyRequest(
            session_id=self._session, size=processes_pb2.PtySize(rows=rows, cols=cols), **self._target()
        )
        self._c.call(self._c.stubs.processes.ResizePty, req)

    def signal(self, signal: int = 15, *, group: bool = False) -> None:
        req = processes_pb2.SignalProcessRequest(session_id=self._session, signal=int(signal), group=group, **self._target())
        self._c.call(self._c.stubs.processes.SignalProcess, req)

    def kill(self) -> None:
        self.signal(9, group=True)


class Code:
    """Stateful code execution (Python, Node.js, bash), Jupyter-style."""

    def __init__(self, conn: _Conn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    def run(self, code: str, *, language: str = "python", context: Optional[str] = None, timeout: Optional[Duration] = None) -> t.CodeResult:
        """Runs `code` in `context` (or the language's default context)."""
        req = t.run_code_request(self._id, code, language=language, context=context, timeout=timeout)
        return t.CodeResult.from_proto(self._c.call(self._c.stubs.code.RunCode, req))

    def create_context(self, language: str = "python") -> t.CodeContext:
        m = self._c.call(self._c.stubs.code.CreateContext, code_pb2.CreateContextRequest(session_id=self._id, language=language))
        return t.CodeContext.from_proto(m)

    def contexts(self) -> List[t.CodeContext]:
        r = self._c.call(self._c.stubs.code.ListContexts, code_pb2.ListContextsRequest(session_id=self._id))
        return [t.CodeContext.from_proto(c) for c in r.contexts]

    def restart_context(self, context_id: str) -> t.CodeContext:
        m = self._c.call(self._c.stubs.code.RestartContext, code_pb2.ContextRequest(session_id=self._id, context_id=context_id))
        return t.CodeContext.from_proto(m)

    def delete_context(self, context_id: str) -> None:
        self._c.call(self._c.stubs.code.DeleteContext, code_pb2.ContextRequest(session_id=self._id, context_id=context_id))


class Network:
    """The session's egress policy."""

    def __init__(self, conn: _Conn, session_id: str) -> None:
        self._c = conn
        self._id = session_id

    def get(self) -> t.NetworkStatus:
        """Policy in force, denial count and recent denials."""
        m = self._c.call(self._c.stubs.sessions.GetNetwork, network_pb2.GetNetworkRequest(session_id=self._id))
        return t.NetworkStatus.from_proto(m)

    def update(self, network: t.NetworkLike) -> t.NetworkStatus:
        """Replaces the policy; applies at once to new connections and lookups."""
        req = network_pb2.UpdateNetworkRequest(session_id=self._id, network=t.NetworkPolicy.coerce(network).to_proto())
        return t.NetworkStatus.from_proto(self._c.call(self._c.stubs.sessions.UpdateNetwork, req))


class Environments:
    """Named images declared by package lists. Returns the protobuf messages
    (`paddock.v1.environments_pb2`)."""

    def __init__(self, conn: _Conn) -> None:
        self._c = conn
        self._e = conn.stubs.environments

    def create(self, name: str, *, packages: Optional[Mapping[str, Sequence[str]]] = None, env: Optional[Mapping[str, str]] = None, description: str = "", network: Optional[t.NetworkLike] = None):
        req = t.create_environment_request(name, packages=packages, env=env, description=description, network=network)
        return self._c.call(self._e.CreateEnvironment, req)

    def get(self, environment: str):
        return self._c.call(self._e.GetEnvironment, environments_pb2.GetEnvironmentRequest(environment=environment))

    def list(self):
        return list(self._c.call(self._e.ListEnvironments, environments_pb2.ListEnvironmentsRequest()).environments)

    def delete(self, environment: str) -> None:
        self._c.call(self._e.DeleteEnvironment, environments_pb2.DeleteEnvironmentRequest(environment=environment))

    def build(self, environment: str) -> Iterator[Any]:
        """The build's progress events (`BuildEvent`), to its end."""
        return self._c.stream(self._e.BuildEnvironment, environments_pb2.BuildEnvironmentRequest(environment=environment))


class Tokens:
    """API tokens (admins only). Returns the protobuf messages (`paddock.v1.tokens_pb2`)."""

    def __init__(self, conn: _Conn) -> None:
        self._c = conn
        self._t = conn.stubs.tokens

    def create(self, name: str, *, tenant: str = ""):
        """Returns the response, whose ``token`` is shown only this once."""
        return self._c.call(self._t.CreateToken, tokens_pb2.CreateTokenRequest(name=name, tenant=tenant))

    def list(self):
        return list(self._c.call(self._t.ListTokens, tokens_pb2.ListTokensRequest()).tokens)

    def delete(self, name: str) -> None:
        self._c.call(self._t.DeleteToken, tokens_pb2.DeleteTokenRequest(name=name))
