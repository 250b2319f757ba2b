"""The six agent tools (bash, read, write, edit, glob, grep) as the anthropic
SDK's tool objects, each forwarding to Paddock's Tools/RunTool.

They are made with the SDK's own `beta_async_tool` / `beta_tool`, with the
same names, Python signatures, input schemas (the SDK's
`BetaManagedAgentsAgentToolset20260401*Input`) and descriptions as the
reference tools in `anthropic.lib.tools.agent_toolset`, so input that the
reference refuses is refused here with the identical error (pydantic
validation of the same signature: ``ValueError('Invalid arguments for
function read')``), and the daemon runs exactly what the reference would.
Results come back the way the reference returns them: a string for a text
result, a list of content blocks for an image or PDF, and `ToolError` with the
same content for a tool-level failure.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Optional

from anthropic.lib.tools import ToolError, beta_async_tool, beta_tool
from anthropic.types.beta import (
    BetaManagedAgentsAgentToolset20260401BashInput as BashInput,
    BetaManagedAgentsAgentToolset20260401EditInput as EditInput,
    BetaManagedAgentsAgentToolset20260401GlobInput as GlobInput,
    BetaManagedAgentsAgentToolset20260401GrepInput as GrepInput,
    BetaManagedAgentsAgentToolset20260401ReadInput as ReadInput,
    BetaManagedAgentsAgentToolset20260401WriteInput as WriteInput,
)

from .._common import given
from ..types import ToolResult

__all__ = ["TOOL_NAMES", "async_tools", "sync_tools", "to_sdk_result"]

TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep")

# The reference tools' descriptions (their docstrings), which the SDK sends
# as the tool definitions' descriptions.
_DOC = {
    "bash": "Run a command in a persistent bash shell.",
    "read": "Read a file rooted at the working directory.",
    "write": "Write a file, creating parent directories as needed.",
    "edit": "Replace text in a file by exact string match.",
    "glob": "List files matching a glob pattern, newest first.",
    "grep": "Search file contents for a regular expression.",
}
_SCHEMA = {"bash": BashInput, "read": ReadInput, "write": WriteInput, "edit": EditInput, "glob": GlobInput, "grep": GrepInput}


def to_sdk_result(r: ToolResult) -> Any:
    """A RunTool result as the reference tool returns it (or raises it)."""
    if len(r.content) == 1 and r.content[0]["type"] == "text":
        content: Any = r.content[0]["text"]
    else:
        content = r.content
    if r.is_error:
        raise ToolError(content)
    return content


AsyncRun = Callable[[str, Dict[str, Any]], Awaitable[ToolResult]]
SyncRun = Callable[[str, Dict[str, Any]], ToolResult]


def async_tools(run: AsyncRun) -> List[Any]:
    """The six tools as `BetaAsyncFunctionTool`s; `run(name, input)` does the call."""

    # Optional[...] as in the reference: pydantic evaluates these annotations.
    async def bash(command: Optional[str] = None, restart: Optional[bool] = None, timeout_ms: Optional[int] = None) -> Any:
        return to_sdk_result(await run("bash", given(command=command, restart=restart, timeout_ms=timeout_ms)))

    async def read(file_path: str, view_range: Optional[List[int]] = None) -> Any:
        return to_sdk_result(await run("read", given(file_path=file_path, view_range=view_range)))

    async def write(file_path: str, content: str) -> Any:
        return to_sdk_result(await run("write", {"file_path": file_path, "content": content}))

    async def edit(file_path: str, old_string: str, new_string: str, replace_all: Optional[bool] = None) -> Any:
        return to_sdk_result(
            await run("edit", given(file_path=file_path, old_string=old_string, new_string=new_string, replace_all=replace_all))
        )

    async def glob(pattern: str, path: Optional[str] = None) -> Any:
        return to_sdk_result(await run("glob", given(pattern=pattern, path=path)))

    async def grep(pattern: str, path: Optional[str] = None) -> Any:
        return to_sdk_result(await run("grep", given(pattern=pattern, path=path)))

    fns = {"bash": bash, "read": read, "write": write, "edit": edit, "glob": glob, "grep": grep}
    return [beta_async_tool(name=n, description=_DOC[n], input_schema=_SCHEMA[n])(fns[n]) for n in TOOL_NAMES]


def sync_tools(run: SyncRun) -> List[Any]:
    """The six tools as (blocking) `BetaFunctionTool`s, for the sync Messages tool runner."""

    def bash(command: Optional[str] = None, restart: Optional[bool] = None, timeout_ms: Optional[int] = None) -> Any:
        return to_sdk_result(run("bash", given(command=command, restart=restart, timeout_ms=timeout_ms)))

    def read(file_path: str, view_range: Optional[List[int]] = None) -> Any:
        return to_sdk_result(run("read", given(file_path=file_path, view_range=view_range)))

    def write(file_path: str, content: str) -> Any:
        return to_sdk_result(run("write", {"file_path": file_path, "content": content}))

    def edit(file_path: str, old_string: str, new_string: str, replace_all: Optional[bool] = None) -> Any:
        return to_sdk_result(
            run("edit", given(file_path=file_path, old_string=old_string, new_string=new_string, replace_all=replace_all))
        )

    def glob(pattern: str, path: Optional[str] = None) -> Any:
        return to_sdk_result(run("glob", given(pattern=pattern, path=path)))

    def grep(pattern: str, path: Optional[str] = None) -> Any:
        return to_sdk_result(run("grep", given(pattern=pattern, path=path)))

    fns = {"bash": bash, "read": read, "write": write, "edit": edit, "glob": glob, "grep": grep}
    return [beta_tool(name=n, description=_DOC[n], input_schema=_SCHEMA[n])(fns[n]) for n in TOOL_NAMES]
