"""The .varlink interface definitions shipped beside this module, returned verbatim by GetInterfaceDescription."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def read_idl(interface: str) -> str:
    return resources.files(__package__).joinpath("idl", f"{interface}.varlink").read_text(encoding="utf-8")
