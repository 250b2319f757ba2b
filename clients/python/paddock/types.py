"""Plain data types returned by the client, and the conversions between them,
Python values and the generated protobuf messages (`paddock.v1`).

Both the sync and the async client build their requests and read their
responses with the functions here, so the two behave the same.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from paddock.v1 import (
    code_pb2,
    environments_pb2,
    events_pb2,
    files_pb2,
    network_pb2,
    processes_pb2,
    sessions_pb2,
    tools_pb2,
)

__all__ = [
    "SessionInfo",
    "SessionState",
    "Limits",
    "NetworkPolicy",
    "NetworkStatus",
    "Denial",
    "ExecResult",
    "ExecEvent",
    "ToolResult",
    "FileInfo",
    "FileType",
    "WatchEvent",
    "ProcessInfo",
    "ProcessEvent",
    "CodeResult",
    "CodeContext",
    "parse_bytes",
    "parse_seconds",
]

# ------------------------------------------------------------------ units

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d|)\s*$")
_DURATION_UNITS = {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bytes(v: Union[int, str]) -> int:
    """``512M``, ``1G``, ``1.5G``, ``1048576`` -> bytes (binary units, as the CLI reads them)."""
    if isinstance(v, bool):
        raise TypeError("a size is an int or a string such as '512M'")
    if isinstance(v, int):
        return v
    m = _SIZE.match(v)
    if not m:
        raise ValueError(f"{v!r} is not a size such as '512M' (units K, M, G, T; binary)")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def parse_seconds(v: Union[int, float, str, _dt.timedelta]) -> float:
    """``30``, ``"30s"``, ``"10m"``, ``"1h"``, ``"2d"``, ``"500ms"`` or a timedelta -> seconds."""
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        m = _DURATION.match(v)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"{v!r} is not a duration such as 30, '30s', '10m' or '1h'")


def _ms(v: Union[int, float, str, _dt.timedelta, None]) -> Optional[int]:
    return None if v is None else int(round(parse_seconds(v) * 1000))


# ------------------------------------------------------------------ sessions


class SessionState:
    UNSPECIFIED = "unspecified"
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"


_STATE = {
    sessions_pb2.SESSION_STATE_UNSPECIFIED: SessionState.UNSPECIFIED,
    sessions_pb2.SESSION_STATE_CREATING: SessionState.CREATING,
    sessions_pb2.SESSION_STATE_RUNNING: SessionState.RUNNING,
    sessions_pb2.SESSION_STATE_STOPPED: SessionState.STOPPED,
    sessions_pb2.SESSION_STATE_PAUSED: SessionState.PAUSED,
}

_IDLE_ACTIONS = {"stop": sessions_pb2.IDLE_ACTION_STOP, "pause": sessions_pb2.IDLE_ACTION_PAUSE}


@dataclass
class Limits:
    memory_bytes: Optional[int] = None
    cpus: Optional[float] = None
    pids: Optional[int] = None
    disk_bytes: Optional[int] = None

    @classmethod
    def from_proto(cls, m: sessions_pb2.Limits) -> "Limits":
        return cls(
            memory_bytes=m.memory_bytes if m.HasField("memory_bytes") else None,
            cpus=m.cpus if m.HasField("cpus") else None,
            pids=m.pids if m.HasField("pids") else None,
            disk_bytes=m.disk_bytes if m.HasField("disk_bytes") else None,
        )


_MODES = {
    "none": network_pb2.NETWORK_MODE_NONE,
    "limited": network_pb2.NETWORK_MODE_LIMITED,
    "unrestricted": network_pb2.NETWORK_MODE_UNRESTRICTED,
}
_MODE_NAMES = {v: k for k, v in _MODES.items()}
_MODE_NAMES[network_pb2.NETWORK_MODE_UNSPECIFIED] = ""


@dataclass
class NetworkPolicy:
    """A session's egress rules (see the README's Networking section).

    ``mode``: ``"none"`` (loopback only), ``"limited"`` (only ``allowed_hosts``,
    plus the package registries / MCP servers when asked) or ``"unrestricted"``.
    """

    mode: str = "none"
    allowed_hosts: List[str] = field(default_factory=list)
    allow_package_managers: bool = False
    allow_mcp_servers: bool = False
    mcp_servers: List[str] = field(default_factory=list)

    def to_proto(self) -> network_pb2.NetworkPolicy:
        if self.mode not in _MODES:
            raise ValueError(f"network mode {self.mode!r}: use 'none', 'limited' or 'unrestricted'")
        return network_pb2.NetworkPolicy(
            mode=_MODES[self.mode],
            allowed_hosts=list(self.allowed_hosts),
            allow_package_managers=self.allow_package_managers,
            allow_mcp_servers=self.allow_mcp_servers,
            mcp_servers=list(self.mcp_servers),
        )

    @classmethod
    def from_proto(cls, m: network_pb2.NetworkPolicy) -> "NetworkPolicy":
        return cls(
            mode=_MODE_NAMES.get(m.mode, ""),
            allowed_hosts=list(m.allowed_hosts),
            allow_package_managers=m.allow_package_managers,
            allow_mcp_servers=m.allow_mcp_servers,
            mcp_servers=list(m.mcp_servers),
        )

    @classmethod
    def coerce(cls, v: "NetworkLike") -> "NetworkPolicy":
        """A mode name, a dict of these fields, or a NetworkPolicy."""
        if isinstance(v, NetworkPolicy):
            return v
        if isinstance(v, str):
            return cls(mode=v)
        if isinstance(v, Mapping):
            v = dict(v)
            # Hosts alone mean limited: the only mode in which they matter.
            v.setdefault("mode", "limited" if v.get("allowed_hosts") else "none")
            return cls(**v)
        raise TypeError("network: give 'none', 'limited', 'unrestricted', a dict or a NetworkPolicy")


NetworkLike = Union[str, Mapping[str, Any], NetworkPolicy]


@dataclass
class Denial:
    time_ms: int
    destination: str
    via: str
    reason: str


@dataclass
class NetworkStatus:
    session_id: str
    policy: NetworkPolicy
    address: str
    denied_total: int
    recent_denials: List[Denial]

    @classmethod
    def from_proto(cls, m: network_pb2.NetworkStatus) -> "NetworkStatus":
        return cls(
            session_id=m.session_id,
            policy=NetworkPolicy.from_proto(m.policy),
            address=m.address,
            denied_total=m.denied_total,
            recent_denials=[Denial(d.time_ms, d.destination, d.via, d.reason) for d in m.recent_denials],
        )


@dataclass
class SessionInfo:
    """What the daemon says about a session (`Session.info`)."""

    id: str
    state: str
    limits: Limits
    created_at_ms: int
    expires_at_ms: int
    init_pid: int
    labels: Dict[str, str]
    environment_id: str
    environment_name: str
    resources: List[str]
    network: NetworkPolicy
    network_denied_total: int
    tenant: str
    auto_resume: bool = False
    #: 0: no idle timeout.
    idle_timeout_seconds: int = 0
    #: ``"stop"`` or ``"pause"``.
    idle_action: str = "stop"
    #: Why it stopped (``"idle"``, ``"ttl"``, ``"stopped"``, ...), once it has; ``""`` otherwise.
    stop_reason: str = ""
    #: When it was paused (Unix ms); 0 unless paused.
    paused_at_ms: int = 0

    @classmethod
    def from_proto(cls, m: sessions_pb2.Session) -> "SessionInfo":
        return cls(
            id=m.id,
            state=_STATE.get(m.state, SessionState.UNSPECIFIED),
            limits=Limits.from_proto(m.limits),
            created_at_ms=m.created_at_ms,
            expires_at_ms=m.expires_at_ms,
            init_pid=m.init_pid,
            labels=dict(m.labels),
            environment_id=m.environment_id,
            environment_name=m.environment_name,
            resources=list(m.resources),
            network=NetworkPolicy.from_proto(m.network),
            network_denied_total=m.network_denied_total,
            tenant=m.tenant,
            auto_resume=m.auto_resume,
            idle_timeout_seconds=m.idle_timeout_seconds,
            idle_action="pause" if m.idle_action == sessions_pb2.IDLE_ACTION_PAUSE else "stop",
            stop_reason=events_pb2.StopReason.Name(m.stop_reason).removeprefix("STOP_REASON_").lower()
            if m.stop_reason
            else "",
            paused_at_ms=m.paused_at_ms,
        )







def set_ttl_request(session_id: str, ttl: Union[int, float, str, _dt.timedelta, None]) -> sessions_pb2.SetSessionTtlRequest:
    """A SetSessionTtl request: ``ttl`` counted from now, a part second rounded up (so ``"500ms"``
    is 1 s, not an out-of-range 0); ``None`` clears the TTL."""
    req = sessions_pb2.SetSessionTtlRequest(session_id=session_id)
    if ttl is not None:
        req.ttl_seconds = int(-(-parse_seconds(ttl) // 1))
    return req


def create_session_request(
    *,
    memory: Union[int, str, None] = None,
    cpus: Optional[float] = None,
    pids: Optional[int] = None,
    disk: Union[int, str, None] = None,
    ttl: Union[int, float, str, _dt.timedelta, None] = None,
    environment: Optional[str] = None,
    network: Optional[NetworkLike] = None,
    labels: Optional[Mapping[str, str]] = None,
    wait_for_build: bool = False,
    resources: Optional[Mapping[str, Union[bytes, str]]] = None,
    idle_timeout: Union[int, float, str, _dt.timedelta, None] = None,
    idle_action: Optional[str] = None,
    auto_resume: bool = False,
) -> sessions_pb2.CreateSessionRequest:
    limits = sessions_pb2.Limits()
    if memory is not None:
        limits.memory_bytes = parse_bytes(memory)
    if cpus is not None:
        limits.cpus = float(cpus)
    if pids is not None:
        limits.pids = int(pids)
    if disk is not None:
        limits.disk_bytes = parse_bytes(disk)
    req = sessions_pb2.CreateSessionRequest(
        limits=limits,
        labels=dict(labels or {}),
        environment=environment or "",
        wait_for_build=wait_for_build,
    )
    if ttl is not None:
        req.ttl_seconds = int(parse_seconds(ttl))
    if idle_timeout is not None:
        req.idle_timeout_seconds = int(-(-parse_seconds(idle_timeout) // 1))  # a part second is a second
    if idle_action is not None:
        if idle_action not in _IDLE_ACTIONS:
            raise ValueError(f"idle_action: {idle_action!r} is not 'stop' or 'pause'")
        req.idle_action = _IDLE_ACTIONS[idle_action]
    req.auto_resume = auto_resume
    if network is not None:
        req.network.CopyFrom(NetworkPolicy.coerce(network).to_proto())
    for path, content in (resources or {}).items():
        data = content.encode() if isinstance(content, str) else bytes(content)
        req.resources.append(sessions_pb2.SessionResource(path=path, content=data))
    return req


def create_environment_request(
    name: str,
    *,
    packages: Optional[Mapping[str, Sequence[str]]] = None,
    env: Optional[Mapping[str, str]] = None,
    description: str = "",
    network: Optional[NetworkLike] = None,
) -> environments_pb2.CreateEnvironmentRequest:
    """`packages`: ``{"apt": ["jq"], "pip": ["six==1.16.0"], ...}`` (apt, cargo, gem, go, npm, pip)."""
    req = environments_pb2.CreateEnvironmentRequest(
        name=name,
        description=description,
        env=dict(env or {}),
        packages=environments_pb2.Packages(**{k: list(v) for k, v in (packages or {}).items()}),
    )
    if network is not None:
        req.network.CopyFrom(NetworkPolicy.coerce(network).to_proto())
    return req


# ------------------------------------------------------------------ exec


@dataclass
class ExecResult:
    """How a command ended and what it printed."""

    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration_us: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")

    @classmethod
    def from_proto(cls, m: sessions_pb2.ExecResponse) -> "ExecResult":
        return cls(
            exit_code=m.exit_code if m.HasField("exit_code") else None,
            signal=m.signal if m.HasField("signal") else None,
            timed_out=m.timed_out,
            stdout=m.stdout,
            stderr=m.stderr,
            stdout_truncated=m.stdout_truncated,
            stderr_truncated=m.stderr_truncated,
            duration_us=m.duration_us,
        )


@dataclass
class ExecEvent:
    """One event of `exec_stream`: a chunk of stdout or stderr, or (last) the exit."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit: Optional[ExecResult] = None

    @classmethod
    def from_proto(cls, m: sessions_pb2.ExecEvent) -> "ExecEvent":
        kind = m.WhichOneof("event")
        if kind == "stdout":
            return cls(stdout=m.stdout)
        if kind == "stderr":
            return cls(stderr=m.stderr)
        return cls(exit=ExecResult.from_proto(m.exit))


def exec_request(
    session_id: str,
    command: Union[str, Sequence[str]],
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Union[bytes, str, None] = None,
    timeout: Union[int, float, str, _dt.timedelta, None] = None,
    output_limit: Union[int, str, None] = None,
) -> sessions_pb2.ExecRequest:
    req = sessions_pb2.ExecRequest(session_id=session_id, cwd=cwd or "", env=dict(env or {}))
    if isinstance(command, str):
        req.shell = command
    else:
        req.argv.extend(command)
    if stdin is not None:
        req.stdin = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    if timeout is not None:
        req.timeout_ms = _ms(timeout)
    if output_limit is not None:
        req.output_limit_bytes = parse_bytes(output_limit)
    return req


# ------------------------------------------------------------------ tools


@dataclass
class ToolResult:
    """A tool call's result: content blocks in the Messages API's shape
    (``{"type": "text", "text": ...}``, ``{"type": "image", "source": {"type":
    "base64", "media_type": ..., "data": ...}}``, ``{"type": "document", ...}``)."""

    content: List[Dict[str, Any]]
    is_error: bool

    @property
    def text(self) -> str:
        """The text blocks joined (what most tools return: one block)."""
        return "".join(b["text"] for b in self.content if b.get("type") == "text")

    @classmethod
    def from_proto(cls, m: tools_pb2.ToolResult) -> "ToolResult":
        blocks: List[Dict[str, Any]] = []
        for b in m.content:
            kind = b.WhichOneof("block")
            if kind == "text":
                blocks.append({"type": "text", "text": b.text})
            elif kind in ("image", "document"):
                src = getattr(b, kind)
                blocks.append(
                    {"type": kind, "source": {"type": "base64", "media_type": src.media_type, "data": src.data}}
                )
        return cls(content=blocks, is_error=m.is_error)


# ------------------------------------------------------------------ files


class FileType:
    UNSPECIFIED = "unspecified"
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


_FILE_TYPE = {
    files_pb2.FILE_TYPE_UNSPECIFIED: FileType.UNSPECIFIED,
    files_pb2.FILE_TYPE_FILE: FileType.FILE,
    files_pb2.FILE_TYPE_DIRECTORY: FileType.DIRECTORY,
    files_pb2.FILE_TYPE_SYMLINK: FileType.SYMLINK,
    files_pb2.FILE_TYPE_OTHER: FileType.OTHER,
}


@dataclass
class FileInfo:
    path: str
    type: str
    size: int
    mode: int
    modified_at_ms: int
    link_target: str

    @property
    def is_dir(self) -> bool:
        return self.type == FileType.DIRECTORY

    @property
    def is_file(self) -> bool:
        return self.type == FileType.FILE

    @classmethod
    def from_proto(cls, m: files_pb2.FileInfo) -> "FileInfo":
        return cls(m.path, _FILE_TYPE.get(m.type, FileType.UNSPECIFIED), m.size, m.mode, m.modified_at_ms, m.link_target)


_WATCH_KIND = {
    files_pb2.WATCH_EVENT_KIND_UNSPECIFIED: "unspecified",
    files_pb2.WATCH_EVENT_KIND_CREATED: "created",
    files_pb2.WATCH_EVENT_KIND_MODIFIED: "modified",
    files_pb2.WATCH_EVENT_KIND_REMOVED: "removed",
    files_pb2.WATCH_EVENT_KIND_MOVED_FROM: "moved_from",
    files_pb2.WATCH_EVENT_KIND_MOVED_TO: "moved_to",
}


@dataclass
class WatchEvent:
    path: str
    kind: str  # created, modified, removed, moved_from, moved_to
    is_dir: bool

    @classmethod
    def from_proto(cls, m: files_pb2.WatchEvent) -> "WatchEvent":
        return cls(m.path, _WATCH_KIND.get(m.kind, "unspecified"), m.is_dir)


# ------------------------------------------------------------------ processes


@dataclass
class ProcessInfo:
    pid: int
    tag: str
    argv: List[str]
    pty: bool
    running: bool
    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    started_at_ms: int
    ended_at_ms: int
    output_bytes: int
    output_start: int

    @classmethod
    def from_proto(cls, m: processes_pb2.ProcessInfo) -> "ProcessInfo":
        return cls(
            pid=m.pid,
            tag=m.tag,
            argv=list(m.argv),
            pty=m.pty,
            running=m.running,
            exit_code=m.exit_code if m.HasField("exit_code") else None,
            signal=m.signal if m.HasField("signal") else None,
            timed_out=m.timed_out,
            started_at_ms=m.started_at_ms,
            ended_at_ms=m.ended_at_ms,
            output_bytes=m.output_bytes,
            output_start=m.output_start,
        )


@dataclass
class ProcessEvent:
    """Output (``stream`` ``"stdout"``/``"stderr"``, ``offset``, ``data``), or
    (last) ``exit`` with the ended process's info."""

    stream: str = ""
    offset: int = 0
    data: bytes = b""
    exit: Optional[ProcessInfo] = None

    @classmethod
    def from_proto(cls, m: processes_pb2.ProcessEvent) -> "ProcessEvent":
        if m.WhichOneof("event") == "output":
            o = m.output
            stream = {processes_pb2.OUTPUT_STREAM_STDOUT: "stdout", processes_pb2.OUTPUT_STREAM_STDERR: "stderr"}
            return cls(stream=stream.get(o.stream, ""), offset=o.offset, data=o.data)
        return cls(exit=ProcessInfo.from_proto(m.exit))


def start_process_request(
    session_id: str,
    command: Union[str, Sequence[str]],
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    user: Optional[str] = None,
    pty: Union[bool, Sequence[int]] = False,
    tag: Optional[str] = None,
    timeout: Union[int, float, str, _dt.timedelta, None] = None,
) -> processes_pb2.StartProcessRequest:
    req = processes_pb2.StartProcessRequest(
        session_id=session_id, cwd=cwd or "", env=dict(env or {}), user=user or "", tag=tag or ""
    )
    if isinstance(command, str):
        req.shell = command
    else:
        req.argv.extend(command)
    if pty:
        req.pty = True
        if not isinstance(pty, bool):
            rows, cols = pty
            req.pty_size.CopyFrom(processes_pb2.PtySize(rows=rows, cols=cols))
    if timeout is not None:
        req.timeout_ms = _ms(timeout)
    return req


def process_target(pid_or_tag: Union[int, str]) -> Dict[str, Any]:
    """Fields naming a process: by pid (int) or by tag (str)."""
    return {"pid": pid_or_tag} if isinstance(pid_or_tag, int) else {"tag": pid_or_tag}


# ------------------------------------------------------------------ code


@dataclass
class CodeError:
    name: str
    value: str
    traceback: str


@dataclass
class CodeResult:
    """A RunCode result. ``outputs`` are ``(mime_type, bytes)`` pairs, e.g. a PNG plot."""

    stdout: str
    stderr: str
    result: str
    error: Optional[CodeError]
    outputs: List[tuple]
    context_id: str
    timed_out: bool
    exit_code: int
    output_truncated: bool

    @classmethod
    def from_proto(cls, m: code_pb2.RunCodeResponse) -> "CodeResult":
        err = CodeError(m.error.name, m.error.value, m.error.traceback) if m.HasField("error") else None
        return cls(
            stdout=m.stdout,
            stderr=m.stderr,
            result=m.result,
            error=err,
            outputs=[(o.mime_type, o.data) for o in m.outputs],
            context_id=m.context_id,
            timed_out=m.timed_out,
            exit_code=m.exit_code,
            output_truncated=m.output_truncated,
        )


@dataclass
class CodeContext:
    id: str
    language: str
    created_at_ms: int

    @classmethod
    def from_proto(cls, m: code_pb2.CodeContext) -> "CodeContext":
        return cls(m.id, m.language, m.created_at_ms)


def run_code_request(
    session_id: str,
    code: str,
    *,
    language: str = "python",
    context: Optional[str] = None,
    timeout: Union[int, float, str, _dt.timedelta, None] = None,
) -> code_pb2.RunCodeRequest:
    req = code_pb2.RunCodeRequest(session_id=session_id, language=language, code=code, context_id=context or "")
    if timeout is not None:
        req.timeout_ms = _ms(timeout)
    return req
