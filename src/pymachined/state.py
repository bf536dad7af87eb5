"""State files in /run/systemd/machines: 252's bytes, atomic writes, tolerant loading."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Final

from .machine import Machine, MachineClass
from .names import cescape, machine_name_is_valid

log = logging.getLogger(__name__)

HEADER: Final = "# This is private data. Do not parse.\n"
UNIT_LINK_PREFIX: Final = "unit:"


def serialize(machine: Machine) -> str:
    """The state file contents 252 writes for `machine`, key for key."""
    lines = [HEADER, f"NAME={machine.name}\n"]
    if machine.uid:  # newer machined's owner; never set for what 252 could register, so 252's bytes stay
        lines.append(f"UID={machine.uid}\n")
    if machine.unit:
        lines.append(f"SCOPE={cescape(machine.unit)}\n")
    if machine.scope_job:
        lines.append(f"SCOPE_JOB={machine.scope_job}\n")
    if machine.service:
        lines.append(f"SERVICE={cescape(machine.service)}\n")
    if machine.root_directory:
        lines.append(f"ROOT={cescape(machine.root_directory)}\n")
    if machine.id:
        lines.append(f"ID={machine.id.hex()}\n")
    if machine.leader:
        lines.append(f"LEADER={machine.leader}\n")
    if machine.machine_class is not MachineClass.UNKNOWN:
        lines.append(f"CLASS={machine.machine_class.value}\n")
    if machine.timestamp.is_set():
        lines.append(f"REALTIME={machine.timestamp.realtime}\n")
        lines.append(f"MONOTONIC={machine.timestamp.monotonic}\n")
    if machine.netif:
        lines.append("NETIF=" + " ".join(str(i) for i in machine.netif) + "\n")
    return "".join(lines)


def parse_env(text: str) -> dict[str, str]:
    """Parse an env-file as systemd's parser does (quotes, backslashes, comments)."""
    result: dict[str, str] = {}
    for key, value in _iter_env(text):
        result[key] = value
    return result


def _iter_env(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        # skip blank space and comment lines
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < n and text[i] not in "=\n":
            i += 1
        key = text[start:i].strip()
        if i >= n or text[i] == "\n":
            continue  # a line without "=" is ignored
        i += 1  # "="
        while i < n and text[i] in " \t":
            i += 1
        value: list[str] = []
        pending_space = ""
        while i < n and text[i] != "\n":
            c = text[i]
            if c in "\"'":
                quote = c
                i += 1
                value.append(pending_space)
                pending_space = ""
                while i < n and text[i] != quote:
                    if text[i] == "\\" and quote == '"' and i + 1 < n:
                        nxt = text[i + 1]
                        if nxt == "\n":
                            i += 2
                            continue
                        if nxt in '"\\`$':
                            value.append(nxt)
                            i += 2
                            continue
                    value.append(text[i])
                    i += 1
                i += 1
            elif c == "\\" and i + 1 < n:
                if text[i + 1] != "\n":
                    value.append(pending_space + text[i + 1])
                    pending_space = ""
                i += 2
            elif c in " \t":
                pending_space += c
                i += 1
            else:
                value.append(pending_space + c)
                pending_space = ""
                i += 1
        if key:
            pairs.append((key, "".join(value)))
    return pairs


class StateDirectory:
    """The directory of state files and `unit:` links."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir = str(path)  # string paths: this is on every registration's path
        self._temporaries = itertools.count()

    def ensure(self) -> None:
        self.path.mkdir(mode=0o755, parents=True, exist_ok=True)

    def save(self, machine: Machine) -> None:
        """Write the state file atomically (hidden temp file + rename), then the unit link."""
        data = serialize(machine).encode("utf-8", "surrogateescape")
        try:
            fd, tmp = self._open_temporary(machine.name)
        except FileNotFoundError:  # removed behind our back: 252 recreates it before every save
            self.ensure()
            fd, tmp = self._open_temporary(machine.name)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, data)
            os.close(fd)
            fd = -1
            os.rename(tmp, f"{self._dir}/{machine.name}")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        if machine.unit:
            try:
                os.symlink(machine.name, f"{self._dir}/{UNIT_LINK_PREFIX}{machine.unit}")
            except FileExistsError:
                pass

    def _open_temporary(self, name: str) -> tuple[int, str]:
        """A new hidden file `.#<name>.<pid>.<n>` (what tempfile.mkstemp does, without its random names:
        the daemon is the only writer, so its PID and a counter make a name nobody else takes)."""
        while True:
            tmp = f"{self._dir}/.#{name}.{os.getpid()}.{next(self._temporaries)}"
            try:
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
            except FileExistsError:  # left by an earlier daemon that had this PID
                continue

    def remove(self, machine: Machine) -> None:
        """Remove the state file and the `unit:` link (even one another machine made)."""
        names = [machine.name]
        if machine.unit:
            names.append(UNIT_LINK_PREFIX + machine.unit)
        for name in names:
            try:
                os.unlink(f"{self._dir}/{name}")
            except FileNotFoundError:
                pass

    def remove_stale_temporaries(self) -> list[str]:
        """Hidden temporary files a killed daemon left between write and rename (nobody reads them)."""
        removed: list[str] = []
        try:
            entries = list(os.scandir(self._dir))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if entry.name.startswith(".#") and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed.append(entry.name)
                except FileNotFoundError:
                    pass
        return removed

    def names(self) -> list[str]:
        """Machine names of the state files present (valid names only)."""
        found: list[str] = []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return found
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.startswith(UNIT_LINK_PREFIX):
                continue
            if not (entry.is_file() or entry.is_symlink()):
                continue
            if machine_name_is_valid(name):
                found.append(name)
        return found

    def load(self, machine: Machine) -> None:
        """Fill `machine` from its state file, ignoring invalid values as 252 does."""
        try:
            text = (self.path / machine.name).read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("Failed to read %s: %s", self.path / machine.name, exc)
            return
        env = parse_env(text)
        machine.unit = env.get("SCOPE", "")
        if (owner := _parse_uint(env.get("UID"))) is not None and owner < 2**32 - 1:
            machine.uid = owner
        machine.scope_job = env.get("SCOPE_JOB", "")
        machine.service = env.get("SERVICE", "")
        machine.root_directory = env.get("ROOT", "")
        if (ident := env.get("ID")) is not None:
            machine.id = _parse_id(ident)
        if (leader := env.get("LEADER")) is not None:
            machine.leader = _parse_pid(leader)
        if (klass := env.get("CLASS")) is not None:
            machine.machine_class = {
                "container": MachineClass.CONTAINER,
                "vm": MachineClass.VM,
            }.get(klass, machine.machine_class)
        realtime = _parse_uint(env.get("REALTIME"))
        monotonic = _parse_uint(env.get("MONOTONIC"))
        if realtime is not None:
            machine.timestamp.realtime = realtime
        if monotonic is not None:
            machine.timestamp.monotonic = monotonic
        if (netif := env.get("NETIF")) is not None:
            machine.netif = [i for word in netif.split() if (i := _parse_ifindex(word)) is not None]


def _parse_uint(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return int(text)


def _parse_pid(text: str) -> int:
    value = _parse_uint(text)
    return value if value is not None and 0 < value < 2**31 else 0


def _parse_ifindex(word: str) -> int | None:
    value = _parse_uint(word)
    return value if value is not None and 0 < value < 2**31 else None


def _parse_id(text: str) -> bytes:
    text = text.strip()
    if len(text) == 36 and text.count("-") == 4:
        text = text.replace("-", "")
    if len(text) != 32:
        return b""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return b""
    return b"" if raw == bytes(16) else raw
