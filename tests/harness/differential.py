"""Run one scenario against pymachined and systemd-machined 252; compare what clients saw.

A scenario is a function `(system, transcript) -> None` that drives real clients
through `transcript.run(...)`. Each step's exit code, stdout and stderr are
recorded, normalised (PIDs, timestamps, unique names) and compared step by step.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from .system import PYMACHINED, REFERENCE, Implementation, Leader, Result, System, system

Scenario = Callable[[System, "Transcript"], None]

_TIME_PATTERNS: Final = [
    (re.compile(r":1\.\d+"), ":1.N"),
    (re.compile(r"(Timestamp=|Since: ).*"), r"\1<time>"),
    (re.compile(r"(TimestampMonotonic=|REALTIME=|MONOTONIC=)\d+"), r"\1<usec>"),
    (re.compile(r"\bt \d{10,}\b"), "t <usec>"),
    (re.compile(r"\b(PID|process) \d+"), r"\1 <pid>"),
    (re.compile(r"\[\d+\]"), "[<pid>]"),
    (re.compile(r"\bpid=\d+"), "pid=<pid>"),
]


_LIST_MACHINES: Final = re.compile(r"^a\(ssso\) (\d+) (.*)$", re.M)
_HASH_ORDERED: Final = re.compile(r"^(a\(ssbttto\)|a\(st\)) (\d+) (.*)$", re.M)


def _sorted_machines(match: re.Match[str]) -> str:
    """ListMachines answers in hash order (252): compare the entries sorted."""
    words = shlex.split(match.group(2))
    entries = sorted(words[i : i + 4] for i in range(0, len(words), 4))
    return f"a(ssso) {match.group(1)} " + " ".join(shlex.join(e) for e in entries)


def _sorted_images(match: re.Match[str]) -> str:
    """ListImages and CleanPool answer in hash order (252) too."""
    width = 7 if match.group(1) == "a(ssbttto)" else 2
    words = shlex.split(match.group(3))
    entries = sorted(words[i : i + width] for i in range(0, len(words), width))
    return f"{match.group(1)} {match.group(2)} " + " ".join(shlex.join(e) for e in entries)


class Target(Protocol):
    def run(self, *argv: str, input: str | None = None, timeout: float = 30) -> Result: ...


@dataclass
class Transcript:
    system: System | Target
    steps: list[tuple[str, str]] = field(default_factory=list)
    leaders: list[int] = field(default_factory=list)
    workdir: Path | None = None
    extra_patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    def leader(self, unit: str, slice_: str = "machine.slice") -> Leader:
        assert isinstance(self.system, System)
        leader = self.system.spawn_leader(unit, slice_)
        self.leaders.append(leader.pid)
        return leader

    def record(self, label: str, result: Result) -> Result:
        text = f"rc={result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
        self.steps.append((self.normalise(label), self.normalise(text)))
        return result

    def note(self, label: str, text: str) -> None:
        self.steps.append((self.normalise(label), self.normalise(text)))

    def run(self, *argv: str) -> Result:
        return self.record(" ".join(argv), self.system.run(*argv))

    def busctl(self, *argv: str) -> Result:
        return self.run("busctl", *argv)

    def machinectl(self, *argv: str) -> Result:
        return self.run("machinectl", "--no-pager", *argv)

    def manager(self, method: str, signature: str = "", *values: object) -> Result:
        """The same call through busctl (texts) and gdbus (error names)."""
        argv = [
            "call",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            method,
        ]
        if signature:
            argv.append(signature)
        argv.extend(str(v) for v in values)
        return self.busctl(*argv)

    def normalise(self, text: str) -> str:
        workdir = self.workdir or getattr(self.system, "workdir", None)
        if workdir is not None:
            text = text.replace(str(workdir), "<workdir>")
        for pattern, replacement in self.extra_patterns:
            text = pattern.sub(replacement, text)
        text = _LIST_MACHINES.sub(_sorted_machines, text)
        text = _HASH_ORDERED.sub(_sorted_images, text)
        for index, pid in sorted(enumerate(self.leaders), key=lambda p: -len(str(p[1]))):
            text = re.sub(rf"\b{pid}\b", f"<leader{index}>", text)
        for pattern, replacement in _TIME_PATTERNS:
            text = pattern.sub(replacement, text)
        return text


BootedScenario = Callable[[Any, "Transcript"], None]


def assert_same_as_252_booted(scenario: BootedScenario, tmp_path: Path) -> list[tuple[str, str]]:
    """Boot the Debian image twice, pymachined then the real systemd-machined 252 inside; compare."""
    from .booted import booted_container

    results: dict[str, list[tuple[str, str]]] = {}
    for machined in ("pymachined", "machined252"):
        workdir = tmp_path / machined
        workdir.mkdir(parents=True)
        with booted_container(workdir, machined=machined) as ct:
            transcript = Transcript(ct, workdir=workdir, extra_patterns=list(BOOTED_PATTERNS))
            scenario(ct, transcript)
            results[machined] = transcript.steps
    return _compare(results["pymachined"], results["machined252"])


BOOTED_PATTERNS: Final = [
    (re.compile(r"/org/freedesktop/systemd1/job/\d+"), "/org/freedesktop/systemd1/job/N"),
]


Patterns = list[tuple[re.Pattern[str], str]]


def run_scenario(
    implementation: Implementation, scenario: Scenario, workdir: Path, extra_patterns: Patterns | None = None
) -> list[tuple[str, str]]:
    workdir.mkdir(parents=True, exist_ok=True)
    with system(implementation, workdir) as sys_:
        transcript = Transcript(sys_, extra_patterns=list(extra_patterns or []))
        scenario(sys_, transcript)
        return transcript.steps


def assert_same_as_252(
    scenario: Scenario,
    tmp_path: Path,
    extra_patterns: Patterns | None = None,
    reference: Implementation = REFERENCE,
) -> list[tuple[str, str]]:
    """Run `scenario` on pymachined and the reference (252 unless told); fail with a unified diff where they differ."""
    ours = run_scenario(PYMACHINED, scenario, tmp_path / PYMACHINED.name, extra_patterns)
    theirs = run_scenario(reference, scenario, tmp_path / reference.name, extra_patterns)
    return _compare(ours, theirs, reference.name)


def _compare(
    ours: list[tuple[str, str]], reference: list[tuple[str, str]], name: str = "machined252"
) -> list[tuple[str, str]]:
    if ours != reference:
        left = [f"## {label}\n{text}" for label, text in reference]
        right = [f"## {label}\n{text}" for label, text in ours]
        diff = "\n".join(
            difflib.unified_diff(
                "\n".join(left).splitlines(), "\n".join(right).splitlines(), name, "pymachined", lineterm=""
            )
        )
        raise AssertionError(f"pymachined differs from systemd-{name.replace('machined', 'machined ')}:\n{diff}")
    assert ours, "scenario recorded no steps"
    return ours
