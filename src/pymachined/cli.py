"""Command line of the pymachined daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
from pathlib import Path

from . import logs
from .daemon import STATE_DIR, Config, Daemon, StartupError
from .errors import MachineError
from .scope import SYSTEM_SCOPE, ScopeError, relocated, user_scope


def parse_level(text: str) -> str:
    try:
        return logs.parse_level(text)
    except MachineError:
        raise argparse.ArgumentTypeError(f"invalid log level '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymachined", description="Virtual machine and container registration service (org.freedesktop.machine1)."
    )
    parser.add_argument(
        "--log-level",
        type=parse_level,
        default=None,
        help="emerg, alert, crit, err, warning, notice, info or debug (default: $SYSTEMD_LOG_LEVEL or info)",
    )
    parser.add_argument(
        "--user",
        action="store_true",
        help="run as the calling user's instance: the session bus, $XDG_RUNTIME_DIR/systemd/machine(s), "
        "images in ~/.local/state/machines, machines of this user only",
    )
    parser.add_argument(
        "--runtime-dir",
        type=Path,
        default=None,
        help="put the state files (machines/), the Varlink sockets (machine/) and the userdb socket (userdb/) "
        "under this directory instead of /run/systemd or $XDG_RUNTIME_DIR/systemd (for trying it out)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"machine state files (default: {STATE_DIR}, or $XDG_RUNTIME_DIR/systemd/machines with --user)",
    )
    parser.add_argument(
        "--bus-address",
        default=None,
        help="D-Bus address to serve on (default: the system bus, $DBUS_SYSTEM_BUS_ADDRESS; "
        "with --user the session bus, $DBUS_SESSION_BUS_ADDRESS)",
    )
    parser.add_argument(
        "--unit-backend",
        choices=("auto", "systemd", "cgroupfs"),
        default="auto",
        help="who manages machine scopes: systemd (org.freedesktop.systemd1), cgroupfs (pymachined itself), "
        "or auto: systemd when it is on the bus (default)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=90.0,
        help="cgroupfs backend: seconds between SIGTERM and SIGKILL when terminating a machine (default: 90)",
    )
    return parser


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as systemd's daemons do: each machine may hold a pidfd
    or two, and each of its namespaces netlink sockets and a mount-table descriptor, while services
    start with a soft limit of 1024. The event loop uses epoll, so descriptors above 1024 are fine,
    and the daemon execs nothing that could inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # the kernel's default fs.nr_open
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            pass  # e.g. above fs.nr_open: keep what we have


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = logs.LogSettings.from_environment(args.log_level)
    os.umask(0o022)
    raise_fd_limit()
    try:
        scope = user_scope() if args.user else SYSTEM_SCOPE
        if args.runtime_dir is not None:
            scope = relocated(scope, args.runtime_dir.absolute())
    except ScopeError as exc:
        logging.getLogger("pymachined").error("%s", exc)
        return 1
    daemon = Daemon(
        Config(
            scope=scope,
            state_dir=args.state_dir,
            bus_address=args.bus_address,
            unit_backend=args.unit_backend,
            stop_timeout=args.stop_timeout,
        ),
        settings,
    )
    try:
        asyncio.run(daemon.run())
    except StartupError as exc:
        logging.getLogger("pymachined").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
