"""io.systemd.MachineImage: the image pool over Varlink, through the same actions as the D-Bus Image methods."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final

from ..actions import Authorize, Services
from ..actions import images as actions
from ..errors import ErrorKind, MachineError
from ..images import discovery
from ..images.image import Image
from ..images.pool import UINT64_MAX
from .idl_files import read_idl
from .machine import AuthorizerFactory, allows_interaction, invalid, strict
from .server import EXPECTED_MORE, Handler, Interface, Parameters, VarlinkCall, VarlinkError

INTERFACE: Final = "io.systemd.MachineImage"
NO_SUCH_IMAGE: Final = f"{INTERFACE}.NoSuchImage"
TOO_MANY_OPERATIONS: Final = f"{INTERFACE}.TooManyOperations"
NOT_SUPPORTED: Final = f"{INTERFACE}.NotSupported"


def _translate(error: MachineError) -> Exception:
    if error.kind is ErrorKind.NO_SUCH_IMAGE:
        return VarlinkError(NO_SUCH_IMAGE)
    if error.kind is ErrorKind.LIMITS_EXCEEDED:
        return VarlinkError(TOO_MANY_OPERATIONS)
    if error.kind is ErrorKind.NOT_SUPPORTED:
        return VarlinkError(NOT_SUPPORTED)
    return error


async def _run(action: Awaitable[Any]) -> Any:
    try:
        return await action
    except MachineError as error:
        raise _translate(error) from None


class ImageApi:
    """The io.systemd.MachineImage methods."""

    def __init__(self, services: Services, authorizer: AuthorizerFactory) -> None:
        self.services = services
        self.authorizer = authorizer

    def _check_operations(self) -> None:
        """Clone, Remove and CleanPool refuse before they read their parameters."""
        try:
            self.services.operations.check()
        except MachineError as error:
            raise _translate(error) from None

    def _authorize(self, call: VarlinkCall, p: Parameters) -> Authorize:
        return self.authorizer(call, allows_interaction(p))

    def _image(self, name: str) -> Image:
        if not discovery.image_name_is_valid(name):
            raise invalid("name")
        image = actions.find(name)
        if image is None:
            raise VarlinkError(NO_SUCH_IMAGE)
        return image

    async def list(self, call: VarlinkCall, p: Parameters) -> AsyncIterator[Parameters]:
        metadata = (p.get("acquireMetadata") or "no") != "no"
        graceful = p.get("acquireMetadata") == "graceful"
        name = p.get("name")
        if name is not None:
            yield await self.describe(self._image(name), metadata, graceful)
            return
        if not call.more:
            raise VarlinkError(EXPECTED_MORE)
        images = list(actions.discover().values())
        if not images:
            raise VarlinkError(NO_SUCH_IMAGE)
        for image in images:
            yield await self.describe(image, metadata, graceful)

    async def describe(self, image: Image, metadata: bool, graceful: bool) -> Parameters:
        reply: Parameters = {
            "name": image.name,
            "path": image.path,
            "type": image.type.value,
            "class": "machine",
            "readOnly": image.read_only,
        }
        for key, value in (
            ("creationTimestamp", image.crtime),
            ("modificationTimestamp", image.mtime),
        ):
            if value:
                reply[key] = value
        for key, value in (
            ("usage", image.usage),
            ("usageExclusive", image.usage_exclusive),
            ("limit", image.limit),
            ("limitExclusive", image.limit_exclusive),
        ):
            if value != UINT64_MAX:
                reply[key] = value
        if metadata:
            try:
                found = await actions.read_metadata(image)
            except MachineError:
                if not graceful:
                    raise
            else:
                if found.hostname:
                    reply["hostname"] = found.hostname
                if found.machine_id:
                    reply["machineId"] = found.machine_id.hex()
                if found.machine_info:
                    reply["machineInfo"] = [f"{k}={v}" for k, v in found.machine_info.items()]
                if found.os_release:
                    reply["OSRelease"] = [f"{k}={v}" for k, v in found.os_release.items()]
        return reply

    async def update(self, call: VarlinkCall, p: Parameters) -> Parameters:
        if not discovery.image_name_is_valid(p["name"]):
            raise invalid("name")
        new_name = p.get("newName")
        if new_name is not None and not discovery.image_name_is_valid(new_name):
            raise invalid("newName")
        image = self._image(p["name"])
        authorize = self._authorize(call, p)
        limit = p.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise invalid("limit")
        if new_name is not None:
            await _run(actions.rename(image, new_name, authorize))
            image = self._image(new_name)
        if p.get("readOnly") is not None:
            await _run(actions.mark_read_only(image, p["readOnly"], authorize))
        if limit is not None:
            await _run(actions.set_limit(image, limit, authorize))
        return {}

    async def clone(self, call: VarlinkCall, p: Parameters) -> Parameters:
        self._check_operations()
        if not discovery.image_name_is_valid(p["name"]):
            raise invalid("name")
        new_name = p["newName"]
        if not discovery.image_name_is_valid(new_name):
            raise invalid("newName")
        image = self._image(p["name"])
        authorize = self._authorize(call, p)
        await _run(actions.clone(self.services, image, new_name, bool(p.get("readOnly")), authorize))
        return {}

    async def remove(self, call: VarlinkCall, p: Parameters) -> Parameters:
        self._check_operations()
        image = self._image(p["name"])
        authorize = self._authorize(call, p)
        await _run(actions.remove(self.services, image, authorize))
        return {}

    async def set_pool_limit(self, call: VarlinkCall, p: Parameters) -> Parameters:
        limit = p["limit"]
        if type(limit) is not int or limit < 0:
            raise invalid("limit")
        authorize = self._authorize(call, p)
        await _run(actions.set_pool_limit(limit, authorize))
        return {}

    async def clean_pool(self, call: VarlinkCall, p: Parameters) -> AsyncIterator[Parameters]:
        self._check_operations()
        authorize = self._authorize(call, p)
        removed = await _run(actions.clean_pool(self.services, p["mode"], authorize))
        if not removed:
            raise VarlinkError(NO_SUCH_IMAGE)
        for name, usage in removed:
            entry: Parameters = {"name": name}
            if usage != UINT64_MAX:
                entry["usageExclusive"] = usage
            yield entry

    def interface(self) -> Interface:
        methods: dict[str, Handler] = {
            "List": self.list,
            "Update": self.update,
            "Clone": self.clone,
            "Remove": self.remove,
            "SetPoolLimit": self.set_pool_limit,
            "CleanPool": self.clean_pool,
        }
        return Interface(INTERFACE, read_idl(INTERFACE), {name: strict(h) for name, h in methods.items()})
