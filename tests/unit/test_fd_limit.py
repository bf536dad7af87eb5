"""The daemon raises its soft descriptor limit to the hard one (services start with 1024)."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_soft_limit_raised_to_the_hard_one() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    script = (
        "import resource; from pymachined.cli import raise_fd_limit; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard})); "
        "raise_fd_limit(); print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(hard), str(hard)]
