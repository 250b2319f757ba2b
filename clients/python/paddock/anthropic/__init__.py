"""Paddock as the hands of the anthropic SDK (``pip install 'paddock[anthropic]'``).

- `agent_toolset(...)`: the tools factory for the SDK's self-hosted
  `anthropic.lib.environments.EnvironmentWorker(tools=...)`; every Managed
  Agents session gets a sandbox of its own.
- `tools(session)`: the six agent tools (bash, read, write, edit, glob, grep)
  bound to an existing session, for a harness running its own loop with the
  SDK's tool runner. An `AsyncSession` gives async tools, a `Session` blocking ones.
- ``paddock-worker``: the command that polls a self-hosted environment and
  runs every session's tools in Paddock (`paddock.anthropic.worker`).

Results, error texts and content blocks are those of the SDK's reference
tools (`anthropic.lib.tools.agent_toolset`).
"""

from __future__ import annotations

from typing import Any, List, Union

from .._async import AsyncSession
from .._sync import Session
from ._toolset import SESSION_LABEL, PaddockToolset, agent_toolset
from ._tools import TOOL_NAMES, async_tools, sync_tools, to_sdk_result

__all__ = ["agent_toolset", "tools", "PaddockToolset", "SESSION_LABEL", "TOOL_NAMES", "to_sdk_result"]


def tools(session: Union[AsyncSession, Session]) -> List[Any]:
    """The six agent tools, in the reference order, bound to `session`.

    With an `AsyncSession` they are `BetaAsyncFunctionTool`s (for
    ``client.beta.sessions.events.tool_runner`` and the async Messages tool
    runner); with a `Session`, `BetaFunctionTool`s (for the sync Messages tool
    runner). The session is not closed or deleted by the tools.
    """
    if isinstance(session, AsyncSession):
        return async_tools(session.tools.run)
    if isinstance(session, Session):
        return sync_tools(session.tools.run)
    raise TypeError(f"tools(): expected a paddock Session or AsyncSession, got {type(session).__name__}")
