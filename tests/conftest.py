"""Shared fixtures: a real sandbox Stock2Shop API on an ephemeral 127.0.0.1 port.

    def test_something(sandbox):            # default config, user demo/demo, source 1
        requests.get(f"{sandbox.url}/v1/sources", params={"token": ...})

    def test_other(make_sandbox):
        sb = make_sandbox(rate=1.0, faults=Faults(seed=1, error_rate=0.5))

Every sandbox started here is stopped when the test ends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.accounting import STRICT_ENV
from connector.sandbox import Sandbox, SandboxConfig


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """A factory: `make_sandbox(**SandboxConfig fields)` -> a started Sandbox, stopped after the test."""
    started: list[Sandbox] = []

    def make(**config: Any) -> Sandbox:
        sb = Sandbox(SandboxConfig(**config)).start(host="127.0.0.1", port=0)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A started sandbox with the default config (user demo/demo, source 1, 3 req/s)."""
    return make_sandbox()


@pytest.fixture
def fast_sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A sandbox that doesn't rate-limit: the client's clock is fake, the sandbox's is real."""
    return make_sandbox(rate=1000.0, unauth_rate=1000.0)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example export and its photos, copied where a test may change them."""
    folder = tmp_path / "drop"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples", folder, ignore=shutil.ignore_patterns("*.py"))
    return folder


# Every plan a test makes checks that each row read is in exactly one count (connector.accounting):
# a row unaccounted for raises instead of only being logged, so the suite catches it wherever it happens.
os.environ[STRICT_ENV] = "1"
