"""Logging as a systemd service logs: syslog levels and targets, settable at run time (LogControl1)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Final, TextIO

from .errors import invalid_args

SYSLOG_IDENTIFIER: Final = "pymachined"
LEVELS: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
TARGETS: Final = (
    "console",
    "console-prefixed",
    "kmsg",
    "journal",
    "journal-or-kmsg",
    "syslog",
    "syslog-or-kmsg",
    "auto",
    "null",
)
NOTICE: Final = 25
ALERT: Final = 51
EMERG: Final = 52
_PYTHON_LEVELS: Final = {
    "emerg": EMERG,
    "alert": ALERT,
    "crit": logging.CRITICAL,
    "err": logging.ERROR,
    "warning": logging.WARNING,
    "notice": NOTICE,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
logging.addLevelName(NOTICE, "NOTICE")
logging.addLevelName(ALERT, "ALERT")
logging.addLevelName(EMERG, "EMERG")


def parse_level(text: str) -> str:
    """A level name from a name or a number 0–7 (systemd's log_level_from_string)."""
    if text.isdigit() and int(text) < len(LEVELS):
        return LEVELS[int(text)]
    if text in LEVELS:
        return text
    raise invalid_args(f"Invalid log level '{text}'")


def parse_target(text: str) -> str:
    if text not in TARGETS:
        raise invalid_args(f"Invalid log target '{text}'")
    return text


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0 emerg … 7 debug) of a Python log record level."""
    for priority, name in enumerate(LEVELS):
        if levelno >= _PYTHON_LEVELS[name]:
            return priority
    return 7


def stderr_is_journal(stream: TextIO = sys.stderr) -> bool:
    """$JOURNAL_STREAM names stderr's device:inode when systemd connected it to the journal."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


class _Formatter(logging.Formatter):
    def __init__(self, prefixed: bool) -> None:
        super().__init__()
        self.prefixed = prefixed

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.prefixed:
            return "\n".join(f"<{syslog_priority(record.levelno)}>{line}" for line in message.splitlines() or [""])
        return f"{SYSLOG_IDENTIFIER}: {logging.getLevelName(record.levelno)}: {message}"


class _KmsgHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            with open("/dev/kmsg", "w") as kmsg:
                kmsg.write(
                    f"<{syslog_priority(record.levelno)}>{SYSLOG_IDENTIFIER}[{os.getpid()}]: {record.getMessage()}\n"
                )
        except OSError:
            pass


class LogSettings:
    """The daemon's log level and target, applied to the root logger."""

    def __init__(self, level: str = "info", target: str = "auto") -> None:
        self.level = level
        self.target = target
        self.identifier = SYSLOG_IDENTIFIER
        self._handler: logging.Handler | None = None
        self.apply()

    @classmethod
    def from_environment(cls, level: str | None = None) -> LogSettings:
        """$SYSTEMD_LOG_LEVEL and $SYSTEMD_LOG_TARGET, as systemd's daemons read them."""
        chosen = level or os.environ.get("SYSTEMD_LOG_LEVEL", "info")
        try:
            chosen = parse_level(chosen)
        except Exception:
            chosen = "info"
        target = os.environ.get("SYSTEMD_LOG_TARGET", "auto")
        return cls(chosen, target if target in TARGETS else "auto")

    def set_level(self, text: str) -> None:
        self.level = parse_level(text)
        self.apply()

    def set_target(self, text: str) -> None:
        self.target = parse_target(text)
        self.apply()

    def apply(self) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
        handler: logging.Handler
        if self.target == "null":
            handler = logging.NullHandler()
        elif self.target == "kmsg":
            handler = _KmsgHandler()
        else:
            prefixed = self.target == "console-prefixed" or (self.target != "console" and stderr_is_journal())
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_Formatter(prefixed))
        root.addHandler(handler)
        root.setLevel(_PYTHON_LEVELS[self.level])
        self._handler = handler
