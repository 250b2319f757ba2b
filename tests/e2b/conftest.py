"""Fixtures for the E2B SDK suite. tests/tests/e2b.rs starts a paddockd with
--e2b-listen and runs pytest here with E2B_API_URL, E2B_SANDBOX_URL and
E2B_API_KEY (a Paddock token) set: the SDK is used exactly as E2B's docs
show, nothing patched."""

import os

import pytest
from e2b import Sandbox


def pytest_configure(config):
    for var in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(var):
            raise pytest.UsageError(f"{var} is not set; run this suite through tests/tests/e2b.rs")


@pytest.fixture
def sandbox():
    sbx = Sandbox.create("base")
    yield sbx
    sbx.kill()
