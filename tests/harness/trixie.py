"""The reference systemd 257 (Debian 13 "trixie"): its machined, varlinkctl and machinectl, run in the sandbox.

The binaries come from a cached Debian 13 root (build-debian-root --suite trixie) and run through
tests/harness/in-trixie: own mount namespace, overlay over the root, the sandbox's /run /proc /sys /dev /tmp and
image directories bound in, no PID namespace. Only valid inside tests/harness/isolate.

    ensure_trixie_root()                       # once per session (builds in about 40 s when missing or stale)
    with system(REFERENCE_257, tmp_path) as s:  # machined 257 on the test bus
        varlinkctl("introspect", MACHINE_SOCKET)
        machinectl257("list")
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

from harness.system import HARNESS, REFERENCE_257, Result, client_env

BUILD_SCRIPT: Final = HARNESS / "build-debian-root"
IN_TRIXIE: Final = HARNESS / "in-trixie"
MACHINE_SOCKET: Final = "/run/systemd/machine/io.systemd.Machine"
IMAGE_SOCKET: Final = "/run/systemd/machine/io.systemd.MachineImage"
USERDB_SOCKET: Final = "/run/systemd/userdb/io.systemd.Machine"

__all__ = [
    "IMAGE_SOCKET",
    "IN_TRIXIE",
    "MACHINE_SOCKET",
    "REFERENCE_257",
    "USERDB_SOCKET",
    "ensure_trixie_root",
    "in_trixie",
    "machinectl257",
    "varlinkctl",
]


def ensure_trixie_root() -> Path:
    """Build the cached Debian 13 root if it is missing or stale; return its path (as booted.ensure_root())."""
    proc = subprocess.run([str(BUILD_SCRIPT), "--suite", "trixie"], stdout=subprocess.PIPE, text=True, check=True)
    return Path(proc.stdout.strip().splitlines()[-1])


def in_trixie(*argv: str, input: str | None = None, timeout: float = 30, env: dict[str, str] | None = None) -> Result:
    """Run argv (a path inside the Debian 13 root, or a name on its PATH) through in-trixie."""
    proc = subprocess.run(
        [str(IN_TRIXIE), *argv],
        env={**client_env(), **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def varlinkctl(*argv: str, input: str | None = None, timeout: float = 30) -> Result:
    """varlinkctl 257, e.g. varlinkctl("call", MACHINE_SOCKET, "io.systemd.Machine.List", "{}")."""
    return in_trixie("varlinkctl", *argv, input=input, timeout=timeout)


def machinectl257(*argv: str, input: str | None = None, timeout: float = 30) -> Result:
    """machinectl 257 (--no-pager), against whatever machined owns the test bus / the Varlink sockets."""
    return in_trixie("machinectl", "--no-pager", *argv, input=input, timeout=timeout)
