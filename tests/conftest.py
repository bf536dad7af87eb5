"""Fixtures: the isolated system (bus + daemon + leaders) for integration and differential tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.system import PYMACHINED, REFERENCE, Implementation, System, in_isolation, system

ISOLATED_TIERS = ("integration", "differential", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_isolation():
        return
    for item in items:
        if any(f"/{tier}/" in str(item.path) for tier in ISOLATED_TIERS):
            item.add_marker(
                pytest.mark.skip(reason="needs the private namespaces of tests/harness/isolate (run: make test)")
            )


@pytest.fixture
def machined(tmp_path: Path) -> Iterator[System]:
    """pymachined on a private system bus."""
    with system(PYMACHINED, tmp_path) as sys_:
        yield sys_


@pytest.fixture(params=[PYMACHINED, REFERENCE], ids=lambda i: i.name)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    return request.param  # type: ignore[no-any-return]
