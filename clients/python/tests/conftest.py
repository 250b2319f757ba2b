"""Fixtures: one real paddockd for the whole run (tests/daemon.py), unless
PADDOCK_ADDR names one that is already up."""

from __future__ import annotations

import os

import pytest

from daemon import Daemon, debian_image, free_tcp_addr


@pytest.fixture(scope="session")
def daemon():
    """The test daemon, or None when PADDOCK_ADDR points at an existing one."""
    if os.environ.get("PADDOCK_ADDR"):
        yield None
        return
    if os.geteuid() != 0:
        pytest.fail("the tests start paddockd, which makes containers, cgroups and mounts: run them as root")
    image = debian_image()
    if image is None:
        # bash, python3 and node live in the Debian base image; the toolset needs them.
        msg = "the Debian base image is missing; run rootfs/build-base.sh (or set PADDOCK_DEBIAN_IMAGE)"
        if os.environ.get("PADDOCK_REQUIRE_DEBIAN_IMAGE"):
            pytest.fail(msg)
        pytest.skip(msg)
    d = Daemon(image, tcp=free_tcp_addr())
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def addr(daemon):
    return os.environ["PADDOCK_ADDR"] if daemon is None else daemon.addr


@pytest.fixture(scope="session")
def token(daemon):
    """A token for the daemon (an admin token made with the CLI), for TCP calls."""
    return os.environ.get("PADDOCK_TOKEN") if daemon is None else daemon.token("pytest")


@pytest.fixture(scope="session")
def pd(addr, token):
    from paddock import Paddock

    with Paddock(addr, token) as client:
        yield client


@pytest.fixture
def session(pd):
    with pd.sessions.create(memory="1G", ttl="30m") as s:
        yield s


@pytest.fixture(scope="session")
async def apd(addr, token):
    from paddock import AsyncPaddock

    async with AsyncPaddock(addr, token) as client:
        yield client


@pytest.fixture
async def asession(apd):
    async with await apd.sessions.create(memory="1G", ttl="30m") as s:
        yield s
