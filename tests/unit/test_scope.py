"""System and per-user scopes: where state, sockets and images go."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymachined.scope import SYSTEM_SCOPE, ScopeError, relocated, user_scope


def test_system_scope() -> None:
    assert SYSTEM_SCOPE.state_dir == Path("/run/systemd/machines")
    assert SYSTEM_SCOPE.machine_socket_dir == Path("/run/systemd/machine")
    assert SYSTEM_SCOPE.userdb_socket == Path("/run/systemd/userdb/io.systemd.Machine")
    assert SYSTEM_SCOPE.socket_mode == 0o666 and SYSTEM_SCOPE.with_host and SYSTEM_SCOPE.images.with_host
    assert str(SYSTEM_SCOPE.images.pool) == "/var/lib/machines"


def test_user_scope_from_the_environment() -> None:
    scope = user_scope({"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"})
    assert scope.user and not scope.with_host and scope.userdb_socket is None and scope.socket_mode == 0o600
    assert scope.state_dir == Path("/run/user/1000/systemd/machines")
    assert scope.machine_socket_dir == Path("/run/user/1000/systemd/machine")
    assert scope.images.search_paths == (
        "/run/user/1000/machines",
        "/home/u/.local/state/machines",
        "/home/u/.local/lib/machines",
    )
    assert str(scope.images.pool) == "/home/u/.local/state/machines" and not scope.images.with_host
    assert scope.images.lock_dir == "/run/user/1000/systemd/nspawn/locks"
    state_home = user_scope({"XDG_RUNTIME_DIR": "/r", "HOME": "/h", "XDG_STATE_HOME": "/s"})
    assert str(state_home.images.pool) == "/s/machines"
    with pytest.raises(ScopeError):
        user_scope({"HOME": "/home/u"})
    with pytest.raises(ScopeError):
        user_scope({"XDG_RUNTIME_DIR": "relative", "HOME": "/home/u"})


def test_relocated() -> None:
    moved = relocated(SYSTEM_SCOPE, Path("/tmp/x"))
    assert moved.state_dir == Path("/tmp/x/machines") and moved.machine_socket_dir == Path("/tmp/x/machine")
    assert moved.userdb_socket == Path("/tmp/x/userdb/io.systemd.Machine")
    assert moved.images == SYSTEM_SCOPE.images
    user = relocated(user_scope({"XDG_RUNTIME_DIR": "/r", "HOME": "/h"}), Path("/tmp/y"))
    assert user.userdb_socket is None
