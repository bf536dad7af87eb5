"""Image actions: find, remove, rename, clone, mark read-only, set limits, clean the pool, read metadata."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from ..errors import ErrorKind, MachineError, from_errno, invalid_args
from ..images import discovery, metadata
from ..images import ops as image_ops
from ..images.image import Image
from ..images.lock import image_path_lock
from ..operations import TOO_MANY_OPERATIONS
from . import Authorize, Services

HOST_CLONE_REFUSED = "Cloning the host image is refused."


def no_such_image(name: str) -> MachineError:
    return MachineError(ErrorKind.NO_SUCH_IMAGE, f"No image '{name}' known")


def invalid_image_name(name: str) -> MachineError:
    return invalid_args(f"Image name '{name}' is invalid.")


def find(name: str) -> Image | None:
    try:
        return discovery.find(name)
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None


def get(name: str) -> Image:
    """An image by a name that must be valid (InvalidArgs), then known (NoSuchImage)."""
    if not discovery.image_name_is_valid(name):
        raise invalid_image_name(name)
    image = find(name)
    if image is None:
        raise no_such_image(name)
    return image


def discover() -> dict[str, Image]:
    try:
        return discovery.discover()
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None


async def remove(services: Services, image: Image, authorize: Authorize) -> None:
    services.operations.check(TOO_MANY_OPERATIONS)
    await authorize("manage-images", {"image": image.name, "verb": "remove"})
    await services.operations.run(lambda: image_ops.remove(image))


async def rename(image: Image, new_name: str, authorize: Authorize) -> None:
    if not discovery.image_name_is_valid(new_name):
        raise invalid_image_name(new_name)
    await authorize("manage-images", {"image": image.name, "verb": "rename", "new_name": new_name})
    image_ops.rename(image, new_name)


async def clone(
    services: Services,
    image: Image,
    new_name: str,
    read_only: bool,
    authorize: Authorize,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    services.operations.check(TOO_MANY_OPERATIONS)
    if not discovery.image_name_is_valid(new_name):
        raise invalid_image_name(new_name)
    await authorize("manage-images", {"image": image.name, "verb": "clone", "new_name": new_name})
    if image.is_host:
        # Deviation: 252 starts copying the whole host root into the pool; pymachined refuses.
        raise from_errno(errno.EOPNOTSUPP, HOST_CLONE_REFUSED)
    await services.operations.run(lambda: image_ops.clone(image, new_name, read_only, cancelled=cancelled))


async def mark_read_only(image: Image, read_only: bool, authorize: Authorize) -> None:
    details = {"image": image.name, "verb": "mark_read_only", "read_only": "1" if read_only else "0"}
    await authorize("manage-images", details)
    image_ops.mark_read_only(image, read_only)


def check_limit(limit: int) -> None:
    if not image_ops.limit_in_range(limit):
        raise invalid_args("New limit out of range")


async def set_limit(image: Image, limit: int, authorize: Authorize) -> None:
    check_limit(limit)
    # 252 names the image "machine" in these details
    await authorize("manage-images", {"machine": image.name, "verb": "set_limit"})
    await asyncio.to_thread(image_ops.set_limit, image, limit)


async def set_pool_limit(limit: int, authorize: Authorize) -> None:
    check_limit(limit)
    await authorize("manage-machines", {"verb": "set_pool_limit"})
    await asyncio.to_thread(image_ops.set_pool_limit, limit)


async def clean_pool(services: Services, mode: str, authorize: Authorize) -> list[tuple[str, int]]:
    services.operations.check(TOO_MANY_OPERATIONS)
    if mode not in ("all", "hidden"):
        raise invalid_args(f"Unknown mode '{mode}'.")
    await authorize("manage-machines", {"verb": "clean_pool", "mode": mode})
    return await services.operations.run(lambda: image_ops.clean_pool(mode))


def _read_metadata(image: Image) -> metadata.Metadata:
    try:
        with image_path_lock(image.path, exclusive=False):
            return metadata.read_metadata(image)
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO, "Failed to read image metadata: %m") from None


async def read_metadata(image: Image) -> metadata.Metadata:
    return await asyncio.to_thread(_read_metadata, image)
