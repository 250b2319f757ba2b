"""A real MCP client (the `mcp` package's) against Paddock's MCP server.

    client.py stdio CALLS_JSON -- COMMAND [ARG...]     (e.g. paddock mcp --session ID)
    client.py http CALLS_JSON URL [--mode MODE]        (token in PADDOCK_TOKEN)

CALLS_JSON is a list of [tool, arguments]. Prints one JSON object: the
tools listed (name, description, input schema), each call's result (texts,
is_error, structured content) and the protocol version agreed.
"""

import asyncio
import json
import os
import sys

from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def blocks(result):
    out = []
    for b in result.content:
        if b.type == "text":
            out.append({"type": "text", "text": b.text})
        else:
            out.append({"type": b.type})
    return out


async def run(server, calls, mode):
    async with Client(server, mode=mode) as client:
        listed = await client.list_tools()
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in listed.tools
        ]
        results = []
        for name, args in calls:
            r = await client.call_tool(name, args)
            results.append(
                {"content": blocks(r), "is_error": r.is_error, "structured": r.structured_content}
            )
        version = getattr(client.session, "protocol_version", None)
        return {"tools": tools, "results": results, "protocol_version": version}


def main():
    kind, calls = sys.argv[1], json.loads(sys.argv[2])
    rest = sys.argv[3:]
    mode = "auto"
    if "--mode" in rest:
        i = rest.index("--mode")
        mode = rest[i + 1]
        del rest[i : i + 2]
    if kind == "stdio":
        assert rest[0] == "--", "stdio: expected -- COMMAND ..."
        server = StdioServerParameters(command=rest[1], args=rest[2:], env=dict(os.environ))
    elif kind == "http":
        token = os.environ.get("PADDOCK_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        server = streamable_http_client(rest[0], http_client=create_mcp_http_client(headers=headers))
    else:
        sys.exit(f"unknown transport {kind!r}")
    print(json.dumps(asyncio.run(run(server, calls, mode))))


if __name__ == "__main__":
    main()
