"""A LOCAL STAND-IN for the Managed Agents API's self-hosted-environment work
and session endpoints — NOT the real API (this machine cannot reach it).

It serves, over real HTTP on 127.0.0.1, the minimal JSON shapes of the
anthropic SDK's own types (`BetaSelfHostedWork`, `BetaWorkHeartbeat`,
`BetaManagedAgentsSession`, the session events and their SSE stream, skill
versions), enough for the SDK's unmodified `EnvironmentWorker` to poll, ack,
heartbeat, read a session, download its skills, stream its events, post tool
results and stop the item. Every response carries the header
``x-paddock-stand-in: this is a local stand-in, not the Managed Agents API``.

A test scripts each session as a list of work items; each item is a list of
``(tool name, input)`` calls sent as ``agent.tool_use`` events one at a time
(the next after the previous result is posted), then ``session.status_idle``
(the item ends after the worker's max_idle) or, for the last item,
``session.status_terminated``.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

STAND_IN = "this is a local stand-in, not the Managed Agents API"
Call = Tuple[str, Dict[str, Any]]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Session:
    def __init__(self, sid: str, items: List[List[Call]], skills: Dict[str, Dict[str, bytes]]) -> None:
        self.id = sid
        self.items = items  # work item -> calls
        self.item = -1  # which item's script the stream serves
        self.status = "idle"
        self.skills = skills  # name -> {path: bytes}
        self.tool_uses: List[Dict[str, Any]] = []  # every agent.tool_use sent, in order
        self.results: Dict[str, Dict[str, Any]] = {}  # tool_use_id -> the posted user.tool_result
        self.listed = threading.Event()


class StandIn:
    def __init__(self, environment_id: str = "env_standin") -> None:
        self.environment_id = environment_id
        self.lock = threading.Condition()
        self.sessions: Dict[str, _Session] = {}
        self.queue: List[Dict[str, Any]] = []
        self.work: Dict[str, Dict[str, Any]] = {}
        self.stopped: List[str] = []
        self.requests: List[Tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------ scripting

    def add_session(self, sid: str, items: List[List[Call]], skills: Optional[Dict[str, Dict[str, bytes]]] = None) -> None:
        with self.lock:
            self.sessions[sid] = _Session(sid, items, skills or {})

    def enqueue(self, sid: str) -> Dict[str, Any]:
        """A new work item for session `sid` (its next scripted item)."""
        w = {
            "id": f"work_{uuid.uuid4().hex[:12]}",
            "type": "work",
            "environment_id": self.environment_id,
            "state": "queued",
            "data": {"type": "session", "id": sid},
            "secret": None,
            "metadata": {},
            "created_at": _now(),
        }
        with self.lock:
            s = self.sessions[sid]
            s.item += 1
            s.status = "running"
            s.listed.clear()
            self.work[w["id"]] = w
            self.queue.append(w)
        return w

    def wait_stopped(self, work_id: str, timeout: float = 60) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: work_id in self.stopped, timeout)

    # ------------------------------------------------------------ HTTP

    def _handler(self):
        standin = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _json(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("x-paddock-stand-in", STAND_IN)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(n) or b"null") if n else None

            def do_GET(self) -> None:
                standin._route(self, "GET")

            def do_POST(self) -> None:
                standin._route(self, "POST")

        return H

    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append((method, path))
        body = h._body() if method == "POST" else None  # type: ignore[attr-defined]
        m = re.fullmatch(r"/v1/environments/([^/]+)/work/poll", path)
        if m and method == "GET":
            with self.lock:
                w = self.queue.pop(0) if self.queue else None
            if w is None:
                time.sleep(0.2)  # the real poll blocks a while; an empty queue is `null`
            return h._json(w)  # type: ignore[attr-defined]
        m = re.fullmatch(r"/v1/environments/([^/]+)/work/([^/]+)/(ack|heartbeat|stop)", path)
        if m and method == "POST":
            w = self.work[m.group(2)]
            if m.group(3) == "heartbeat":
                return h._json({"type": "work_heartbeat", "last_heartbeat": _now(), "lease_extended": True,  # type: ignore[attr-defined]
                                "state": "active", "ttl_seconds": 60})
            if m.group(3) == "stop":
                with self.lock:
                    self.stopped.append(w["id"])
                    w["state"] = "stopped"
                    self.lock.notify_all()
            return h._json(w)  # type: ignore[attr-defined]
        m = re.fullmatch(r"/v1/sessions/([^/]+)", path)
        if m and method == "GET":
            s = self.sessions[m.group(1)]
            skills = [{"type": "custom", "skill_id": f"skill_{n}", "version": "latest"} for n in s.skills]
            return h._json({"id": s.id, "type": "session", "status": s.status, "agent": {"skills": skills},  # type: ignore[attr-defined]
                            "resources": [], "metadata": {}, "created_at": _now()})
        m = re.fullmatch(r"/v1/skills/skill_([^/]+)/versions/([^/]+)(/content)?", path)
        if m and method == "GET":
            s = next(s for s in self.sessions.values() if m.group(1) in s.skills)
            if not m.group(3):
                return h._json({"id": "1", "type": "skill_version", "name": m.group(1), "skill_id": f"skill_{m.group(1)}"})  # type: ignore[attr-defined]
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for p, data in s.skills[m.group(1)].items():
                    z.writestr(f"{m.group(1)}/{p}", data)  # the SDK strips the wrapper dir
            data = buf.getvalue()
            h.send_response(200)
            h.send_header("content-type", "application/zip")
            h.send_header("x-paddock-stand-in", STAND_IN)
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        m = re.fullmatch(r"/v1/sessions/([^/]+)/events", path)
        if m and method == "GET":
            s = self.sessions[m.group(1)]
            s.listed.set()
            return h._json({"data": [], "next_page": None})  # type: ignore[attr-defined]
        if m and method == "POST":
            s = self.sessions[m.group(1)]
            with self.lock:
                for ev in body["events"]:
                    s.results[ev["tool_use_id"]] = ev
                self.lock.notify_all()
            return h._json({"data": [dict(ev, id=f"sevt_{uuid.uuid4().hex[:8]}") for ev in body["events"]]})  # type: ignore[attr-defined]
        m = re.fullmatch(r"/v1/sessions/([^/]+)/events/stream", path)
        if m and method == "GET":
            return self._stream(h, self.sessions[m.group(1)])
        h._json({"type": "error", "error": {"type": "not_found_error", "message": f"stand-in has no {method} {path}"}}, 404)  # type: ignore[attr-defined]

    def _stream(self, h: BaseHTTPRequestHandler, s: _Session) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("cache-control", "no-cache")
        h.send_header("x-paddock-stand-in", STAND_IN)
        h.send_header("connection", "close")
        h.end_headers()

        def send(ev: Dict[str, Any]) -> None:
            h.wfile.write(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode())
            h.wfile.flush()

        try:
            # The runner opens the stream, then reconciles from the list: send
            # nothing before it has listed, so no event is both missed and pending.
            s.listed.wait(30)
            item = s.item
            last = item == len(s.items) - 1
            for name, tool_input in s.items[item]:
                ev = {"type": "agent.tool_use", "id": f"sevt_{uuid.uuid4().hex[:12]}", "name": name,
                      "input": tool_input, "processed_at": _now()}
                with self.lock:
                    s.tool_uses.append(ev)
                send(ev)
                with self.lock:
                    if not self.lock.wait_for(lambda: ev["id"] in s.results, 200):
                        return
            if last:
                s.status = "terminated"
                send({"type": "session.status_terminated", "id": f"sevt_{uuid.uuid4().hex[:12]}", "processed_at": _now()})
            else:
                s.status = "idle"
                send({"type": "session.status_idle", "id": f"sevt_{uuid.uuid4().hex[:12]}", "processed_at": _now(),
                      "stop_reason": {"type": "end_turn"}})
            # Held open (keepalive pings) until the worker lets go.
            while True:
                time.sleep(0.2)
                h.wfile.write(b"event: ping\ndata: {}\n\n")
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
