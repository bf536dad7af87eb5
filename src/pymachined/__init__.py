"""pymachined: a faithful reimplementation of systemd-machined."""

__version__ = "0.1.0"
