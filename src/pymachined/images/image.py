"""What an image is: its name, path, type and the properties 252 reports per type (A.3)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from typing import Final

from ..names import bus_label_escape
from . import fsinfo
from .pool import UINT64_MAX

IMAGE_PATH_PREFIX: Final = "/org/freedesktop/machine1/image/"
HOST_IMAGE: Final = ".host"


class ImageType(Enum):
    DIRECTORY = "directory"
    SUBVOLUME = "subvolume"
    RAW = "raw"
    BLOCK = "block"


@dataclass(slots=True)
class Image:
    """One image as discovered; properties are computed once, like 252's image objects."""

    name: str
    path: str
    type: ImageType
    read_only: bool = False
    crtime: int = 0
    mtime: int = 0
    usage: int = UINT64_MAX
    usage_exclusive: int = UINT64_MAX
    limit: int = UINT64_MAX
    limit_exclusive: int = UINT64_MAX

    @property
    def object_path(self) -> str:
        return IMAGE_PATH_PREFIX + bus_label_escape(self.name)

    @property
    def is_vendor(self) -> bool:
        return self.path.startswith("/usr/") or self.path == "/usr"

    @property
    def is_host(self) -> bool:
        return self.name == HOST_IMAGE or self.path == "/"

    @property
    def is_hidden(self) -> bool:
        return self.name.startswith(".")


def make_image(name: str, path: str, st: os.stat_result) -> Image | None:
    """An image of the file `path` (symlinks followed for `st`), or None if its type is not one."""
    vendor = path.startswith("/usr/")
    if stat.S_ISDIR(st.st_mode):
        if fsinfo.is_subvolume(path, st):
            from .btrfs import subvolume_quota  # btrfs only: quota through the btrfs tool

            quota = subvolume_quota(path) if not vendor and path != "/" else None
            image = Image(
                name,
                path,
                ImageType.SUBVOLUME,
                read_only=vendor or fsinfo.write_access_erofs(path) or fsinfo.subvolume_read_only(path),
                crtime=fsinfo.crtime_usec(path),
            )
            if quota is not None:
                image.usage, image.usage_exclusive, image.limit, image.limit_exclusive = quota
            return image
        return Image(
            name,
            path,
            ImageType.DIRECTORY,
            read_only=vendor or fsinfo.write_access_erofs(path) or fsinfo.is_immutable(path),
            crtime=fsinfo.crtime_usec(path),
        )
    if stat.S_ISREG(st.st_mode):
        usage = st.st_blocks * 512
        return Image(
            name,
            path,
            ImageType.RAW,
            read_only=vendor or fsinfo.write_access_erofs(path) or (st.st_mode & 0o222) == 0,
            crtime=fsinfo.crtime_usec(path),
            mtime=st.st_mtime_ns // 1000,
            usage=usage,
            usage_exclusive=usage,
            limit=st.st_size,
            limit_exclusive=st.st_size,
        )
    if stat.S_ISBLK(st.st_mode):
        read_only = vendor or fsinfo.write_access_erofs(path) or (st.st_mode & 0o222) == 0
        size = fsinfo.block_device_size(path)
        if size is not None and not read_only:
            read_only = fsinfo.block_device_read_only(path)
        image = Image(name, path, ImageType.BLOCK, read_only=read_only)
        if size:
            image.usage = image.usage_exclusive = image.limit = image.limit_exclusive = size
        return image
    return None
