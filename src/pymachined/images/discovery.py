"""Finding images: the search paths in 252's order, shadowing, hidden images and `.host` (A.1, A.2)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Final

from . import paths
from .image import HOST_IMAGE, Image, ImageType, make_image

NAME_MAX: Final = 255
RAW_SUFFIX: Final = ".raw"


def image_name_is_valid(name: str) -> bool:
    """252's image_name_is_valid(): a file name, not `.#…`, no control characters, at most NAME_MAX bytes."""
    if not name or name in (".", "..") or "/" in name or name.startswith(".#"):
        return False
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if len(raw) > NAME_MAX:
        return False
    return not any(b < 0x20 or b == 0x7F for b in raw)


def _resolved_directory(directory: str) -> str | None:
    """The search directory with its own symlinks resolved, None if it does not exist."""
    try:
        os.stat(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    return os.path.realpath(directory)


def host_image() -> Image:
    image = make_image(HOST_IMAGE, "/", os.stat("/"))
    assert image is not None
    return image


def discover(search_paths: Sequence[str] | None = None) -> dict[str, Image]:
    """All images, earlier directories shadowing later ones, `.host` last (image_discover)."""
    found: dict[str, Image] = {}
    for directory in paths.current().search_paths if search_paths is None else search_paths:
        resolved = _resolved_directory(directory)
        if resolved is None:
            continue
        try:
            entries = os.listdir(resolved)
        except FileNotFoundError:
            continue
        for entry in entries:
            path = os.path.join(resolved, entry)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                name = entry
            elif stat.S_ISREG(st.st_mode) and entry.endswith(RAW_SUFFIX):
                name = entry[: -len(RAW_SUFFIX)]
            else:
                continue
            if not image_name_is_valid(name) or name in found:
                continue
            image = make_image(name, path, st)
            if image is not None:
                found[name] = image
    if HOST_IMAGE not in found and paths.current().with_host:
        found[HOST_IMAGE] = host_image()
    return found


def find(name: str, search_paths: Sequence[str] | None = None) -> Image | None:
    """The first image called `name` along the search path, else `.host`, else None (image_find)."""
    if not image_name_is_valid(name):
        return None
    for directory in paths.current().search_paths if search_paths is None else search_paths:
        resolved = _resolved_directory(directory)
        if resolved is None:
            continue
        path = os.path.join(resolved, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                continue
            raise
        if st is not None:
            if stat.S_ISDIR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                return make_image(name, path, st)
            continue  # 252 skips the whole directory here, even if name.raw exists
        raw_path = path + RAW_SUFFIX
        try:
            st = os.stat(raw_path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                continue
            raise
        if stat.S_ISREG(st.st_mode):
            return make_image(name, raw_path, st)
    if name == HOST_IMAGE and paths.current().with_host:
        return host_image()
    return None


def image_exists(name: str, search_paths: Sequence[str] | None = None) -> bool:
    return find(name, search_paths) is not None


__all__ = ["Image", "ImageType", "discover", "find", "image_exists", "image_name_is_valid"]
