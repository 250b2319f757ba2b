"""Sandbox life cycle through the control plane: create, info, list with
metadata filters, timeout, connect, kill, and the errors E2B gives."""

import time
import uuid
from datetime import datetime, timezone

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException


def test_create_info_kill():
    sbx = Sandbox.create("base", metadata={"owner": "tests"}, timeout=120)
    try:
        assert sbx.sandbox_id.startswith("ses-")
        assert sbx.is_running()
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"owner": "tests"}
        left = (info.end_at - info.started_at).total_seconds()
        assert 115 <= left <= 121, left
    finally:
        assert sbx.kill() is True
    assert not sbx.is_running()
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_default_timeout_is_300_seconds(sandbox):
    info = sandbox.get_info()
    assert 295 <= (info.end_at - info.started_at).total_seconds() <= 301


def test_list_filters_by_metadata_and_pages():
    tag = uuid.uuid4().hex
    made = [Sandbox.create("base", metadata={"run": tag, "n": str(i)}) for i in range(3)]
    try:
        query = SandboxQuery(metadata={"run": tag})
        found = Sandbox.list(query=query).next_items()
        assert sorted(s.sandbox_id for s in found) == sorted(s.sandbox_id for s in made)
        one = Sandbox.list(query=SandboxQuery(metadata={"run": tag, "n": "1"})).next_items()
        assert [s.sandbox_id for s in one] == [made[1].sandbox_id]
        assert one[0].metadata == {"run": tag, "n": "1"}
        assert one[0].state.value == "running"
        # Two per page: a cursor, then the rest.
        pager = Sandbox.list(query=query, limit=2)
        first = pager.next_items()
        assert len(first) == 2 and pager.has_next
        rest = pager.next_items()
        assert len(rest) == 1 and not pager.has_next
        assert {s.sandbox_id for s in first + rest} == {s.sandbox_id for s in made}
    finally:
        for s in made:
            s.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"run": tag})).next_items() == []


def test_set_timeout_shortens_and_extends():
    sbx = Sandbox.create("base", timeout=60)
    sbx.set_timeout(600)
    info = sbx.get_info()
    assert (info.end_at - info.started_at).total_seconds() > 590
    sbx.set_timeout(2)
    deadline = time.time() + 10
    while sbx.is_running() and time.time() < deadline:
        time.sleep(0.25)
    assert not sbx.is_running(), "the sandbox outlived its timeout"
    with pytest.raises(NotFoundException):
        sbx.get_info()


def test_connect_to_a_running_sandbox(sandbox):
    sandbox.files.write("/home/user/marker", "here")
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.files.read("/home/user/marker") == "here"
    assert again.commands.run("cat marker").stdout == "here"


def test_unknown_sandbox():
    with pytest.raises(NotFoundException):
        Sandbox.connect("ses-0000000000000000")
    with pytest.raises(NotFoundException):
        Sandbox.get_info("ses-0000000000000000")
    assert Sandbox.kill("ses-0000000000000000") is False


def test_bad_template():
    with pytest.raises(SandboxException) as e:
        Sandbox.create("no-such-template")
    assert "404" in str(e.value) and "template 'no-such-template' not found" in str(e.value)


def test_bad_api_key():
    with pytest.raises(AuthenticationException) as e:
        Sandbox.create("base", api_key="pdk_not-a-token")
    assert "401" in str(e.value)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="pdk_not-a-token").next_items()


def test_pause_keeps_state_and_connect_resumes(sandbox):
    sandbox.commands.run("sh -c 'n=0; while true; do n=$((n+1)); echo $n > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done'", background=True)
    time.sleep(0.5)
    assert sandbox.pause() is True
    assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
    assert sandbox.pause() is False, "a second pause is E2B's 409: already paused"
    assert any(s.sandbox_id == sandbox.sandbox_id for s in Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items())
    time.sleep(1)
    again = Sandbox.connect(sandbox.sandbox_id)
    assert Sandbox.get_info(sandbox.sandbox_id).state.value == "running"
    first = int(again.files.read("/tmp/count"))
    time.sleep(0.5)
    assert int(again.files.read("/tmp/count")) > first, "the loop did not go on after connect"


def test_auto_pause_at_the_timeout_and_connect_resumes():
    sbx = Sandbox.create("base", timeout=2, lifecycle={"on_timeout": "pause"})
    try:
        sbx.files.write("/tmp/kept", "still here")
        deadline = time.time() + 15
        while time.time() < deadline and Sandbox.get_info(sbx.sandbox_id).state != SandboxState.PAUSED:
            time.sleep(0.2)
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED, "the timeout did not pause it"
        assert not sbx.is_running()
        time.sleep(2.5)  # past the old timeout: a paused sandbox keeps no timeout
        again = Sandbox.connect(sbx.sandbox_id, timeout=30)
        assert again.is_running() and again.files.read("/tmp/kept") == "still here"
        info = Sandbox.get_info(sbx.sandbox_id)
        assert 25 <= (info.end_at - datetime.now(timezone.utc)).total_seconds() <= 31
        # set_timeout(0): the timeout's action now.
        again.set_timeout(0)
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    finally:
        sbx.kill()


def test_list_order_and_started_after():
    tag = uuid.uuid4().hex
    first = Sandbox.create("base", metadata={"run": tag})
    time.sleep(0.05)
    second = Sandbox.create("base", metadata={"run": tag})
    try:
        query = SandboxQuery(metadata={"run": tag})
        newest_first = [s.sandbox_id for s in Sandbox.list(query=query).next_items()]
        assert newest_first == [second.sandbox_id, first.sandbox_id]
        oldest_first = [s.sandbox_id for s in Sandbox.list(query=query, order="asc").next_items()]
        assert oldest_first == [first.sandbox_id, second.sandbox_id]
        after = Sandbox.get_info(second.sandbox_id).started_at
        query = SandboxQuery(metadata={"run": tag}, started_after=after)
        assert [s.sandbox_id for s in Sandbox.list(query=query).next_items()] == [second.sandbox_id]
    finally:
        first.kill()
        second.kill()


def test_unsupported_routes_say_so(sandbox):
    with pytest.raises(SandboxException) as e:
        sandbox.get_metrics()
    assert "Paddock does not support sandbox metrics" in str(e.value)
