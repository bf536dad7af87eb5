"""Bind-mounting a host path into a running container (BindMount).

pymachined uses the new mount API only, as systemd does since v255 when the kernel has it: the
source is cloned as a detached mount tree (open_tree), made read-only on request (mount_setattr),
and a helper that joined the container's namespaces and chrooted into its root attaches it at the
destination (move_mount). No propagation tunnel is needed, so unlike 252, which only knows the
legacy path through /run/systemd/nspawn/propagate/<name> (and answers "Operation not supported"
for any container that systemd-nspawn did not start), this works for every container with a mount
namespace of its own. On a kernel without the new API (open_tree and move_mount came in 5.2,
mount_setattr in 5.12, so there a read-only request) the syscall's ENOSYS is reported as
EOPNOTSUPP, i.e. NotSupported "Failed to mount <src> on <dest> in machine's namespace: Operation
not supported", the answer 252 gives when it finds no tunnel. There is no legacy fallback.

As in 252 the clone is not recursive (252: MS_BIND without MS_REC; newer: open_tree without
AT_RECURSIVE): mounts below the source stay outside, and read-only covers everything that is bound.
The tree is placed on top of whatever is mounted at the destination, as 252's MS_MOVE does (newer
systemd swaps an existing mount out from beneath; not done here).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from typing import Final

from ..errors import from_errno, invalid_args, not_supported
from ..libc import errno_error
from ..libc import libc as _libc
from ..machine import Machine, MachineClass
from .nsexec import HelperFailed, run_in_namespaces, shares_namespace
from .uid_shift import uid_shift

PATH_MAX: Final = 4096
NAME_MAX: Final = 255

AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000
OPEN_TREE_CLONE: Final = 0x1
OPEN_TREE_CLOEXEC: Final = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_SIZE_VER0: Final = 32
# the same numbers on every architecture (the unified syscall table)
_SYS_OPEN_TREE: Final = 428
_SYS_MOVE_MOUNT: Final = 429
_SYS_MOUNT_SETATTR: Final = 442

# resolved now: move_mount runs in the namespace helper, which must not look up symbols (see nsexec)
_syscall = _libc.syscall


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int) -> int:
    if result < 0:
        raise errno_error()
    return result


def path_is_normalized(path: str) -> bool:
    """systemd's path_is_absolute() && path_is_normalized(): no ".", "..", "//", components ≤ NAME_MAX, < PATH_MAX."""
    if not path.startswith("/"):
        return False
    if len(os.fsencode(path)) >= PATH_MAX:
        return False
    if "//" in path or "/./" in path or path.endswith("/."):
        return False
    return all(part != ".." and len(os.fsencode(part)) <= NAME_MAX for part in path.split("/"))


def validate_bind_request(machine: Machine, source: str, destination: str) -> tuple[str, str]:
    """Steps 1–3 of BindMount in 252's order: (source, destination), the destination defaulting to the source."""
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("Bind mounting is only supported on container machines.")
    if not path_is_normalized(source):
        raise invalid_args("Source path must be absolute and normalized.")
    if not destination:
        destination = source
    elif not path_is_normalized(destination):
        raise invalid_args("Destination path must be absolute and normalized.")
    return source, destination


def check_bind_uid_shift(machine: Machine) -> None:
    """Step 5: only containers without a UID shift; a complex mapping is the raw ENXIO 252 returns."""
    if uid_shift(machine) != 0:
        raise not_supported("Can't bind mount on container with user namespacing applied.")


def bind_mount(machine: Machine, source: str, destination: str, read_only: bool, mkdir: bool) -> None:
    """Mount `source` (a host path, symlinks followed) on `destination` inside the container.

    Blocking (it forks a helper and waits): call it from a worker thread. Arguments as
    validate_bind_request returned them.
    """
    fmt = f"Failed to mount {source} on {destination} in machine's namespace: %m"
    try:
        _bind_mount(machine, source, destination, read_only, mkdir)
    except HelperFailed:
        raise from_errno(errno.EPROTO, fmt) from None
    except OSError as exc:
        err = exc.errno or errno.EIO
        raise from_errno(errno.EOPNOTSUPP if err == errno.ENOSYS else err, fmt) from None


def _bind_mount(machine: Machine, source: str, destination: str, read_only: bool, mkdir: bool) -> None:
    if machine.leader <= 0:
        raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
    if shares_namespace(machine.leader, "mnt"):
        # nothing to add a mount to without a mount namespace of its own
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    source_fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    try:
        is_directory = stat.S_ISDIR(os.fstat(source_fd).st_mode)
        tree = _check(_syscall(_SYS_OPEN_TREE, source_fd, b"", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH))
    finally:
        os.close(source_fd)
    try:
        if read_only:
            attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
            _check(_syscall(_SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), MOUNT_ATTR_SIZE_VER0))

        def attach() -> tuple[bytes, list[int]]:  # pragma: no cover - runs in the helper
            if mkdir:
                _make_mount_point(destination, is_directory)
            _check(_syscall(_SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(destination), MOVE_MOUNT_F_EMPTY_PATH))
            return b"", []

        pidfd = machine.leader_ref.fd if machine.leader_ref is not None else -1
        run_in_namespaces(machine.leader, attach, pidfd=pidfd)
    finally:
        os.close(tree)


def _make_mount_point(destination: str, is_directory: bool) -> None:  # pragma: no cover - runs in the helper
    """252's mkdir_parents(dest, 0755) and make_mount_point_inode_from_stat(dest, 0700); errors ignored."""
    prefix = ""
    for part in destination.strip("/").split("/")[:-1]:
        prefix += "/" + part
        try:
            os.mkdir(prefix, 0o755)
        except FileExistsError:
            if not os.path.isdir(prefix):
                return
        except OSError:
            return
    try:
        if is_directory:
            os.mkdir(destination, 0o700)
        else:
            os.mknod(destination, stat.S_IFREG | 0o600)  # 0700 without the x bits
    except OSError:
        pass
