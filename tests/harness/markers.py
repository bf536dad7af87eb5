"""pytest markers shared by the tiers."""

from __future__ import annotations

import os

import pytest

# systemd-nspawn 252 resolves the cgroup root through PID 1's cgroup; when tests/harness/isolate
# simulates the pure cgroup2 layout on a hybrid host, PID 1 lies outside the test's cgroup namespace.
needs_nspawn = pytest.mark.skipif(
    os.environ.get("PYMACHINED_CGROUP_LAYOUT_SIMULATED") == "1",
    reason="systemd-nspawn 252 finds the cgroup root through PID 1's cgroup, which lies outside the test's cgroup "
    "namespace when tests/harness/isolate simulates the pure cgroup2 layout on this hybrid host",
)
