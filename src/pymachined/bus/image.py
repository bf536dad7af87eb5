"""org.freedesktop.machine1.Image: image objects below …/image, and the Manager's *Image* forwarders."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Final

from ..actions import images as actions
from ..images import discovery
from ..images.image import IMAGE_PATH_PREFIX, Image
from ..names import bus_label_unescape
from .dispatch import Call
from .machine import authorizer, services
from .vtable import Body, Interface, Method, Property, args

INTERFACE: Final = "org.freedesktop.machine1.Image"
PREFIX: Final = IMAGE_PATH_PREFIX.rstrip("/")


class _PeerCancellation:
    """Operations started by each peer; a peer leaving the bus cancels its own (beyond 252)."""

    def __init__(self) -> None:
        self.by_peer: dict[str, set[threading.Event]] = {}

    def watch(self, call: Call) -> threading.Event:
        listeners = call.dispatcher.peer_listeners
        if self.peer_gone not in listeners:
            listeners.append(self.peer_gone)
        event = threading.Event()
        self.by_peer.setdefault(call.sender, set()).add(event)
        return event

    def done(self, call: Call, event: threading.Event) -> None:
        events = self.by_peer.get(call.sender)
        if events is not None:
            events.discard(event)
            if not events:
                del self.by_peer[call.sender]

    def peer_gone(self, name: str) -> None:
        for event in self.by_peer.pop(name, ()):
            event.set()


CANCELLATION: Final = _PeerCancellation()


async def remove(call: Call, image: Image) -> Body:
    await actions.remove(services(call), image, authorizer(call))
    return []


async def rename(call: Call, image: Image, new_name: str) -> Body:
    await actions.rename(image, new_name, authorizer(call))
    return []


async def clone(call: Call, image: Image, new_name: str, read_only: bool) -> Body:
    event = CANCELLATION.watch(call)
    try:
        await actions.clone(services(call), image, new_name, read_only, authorizer(call), cancelled=event.is_set)
    finally:
        CANCELLATION.done(call, event)
    return []


async def mark_read_only(call: Call, image: Image, read_only: bool) -> Body:
    await actions.mark_read_only(image, read_only, authorizer(call))
    return []


async def set_limit(call: Call, image: Image, limit: int) -> Body:
    await actions.set_limit(image, limit, authorizer(call))
    return []


async def get_hostname(call: Call, image: Image) -> Body:
    return [(await actions.read_metadata(image)).hostname]


async def get_machine_id(call: Call, image: Image) -> Body:
    return [(await actions.read_metadata(image)).machine_id]


async def get_machine_info(call: Call, image: Image) -> Body:
    return [(await actions.read_metadata(image)).machine_info]


async def get_os_release(call: Call, image: Image) -> Body:
    return [(await actions.read_metadata(image)).os_release]


# Manager methods


def get_image(call: Call, _obj: None, name: str) -> Body:
    image = actions.find(name)  # an invalid name is simply not found here (252)
    if image is None:
        raise actions.no_such_image(name)
    return [image.object_path]


def list_images(call: Call, _obj: None) -> Body:
    images = actions.discover()
    return [[[i.name, i.type.value, i.read_only, i.crtime, i.mtime, i.usage, i.object_path] for i in images.values()]]


Answer = Awaitable[Body]


def on_image(handler: Callable[..., Answer]) -> Callable[..., Answer]:
    """A Manager forwarder (redirect_method_to_image): InvalidArgs, then NoSuchImage, then the Image method."""

    def forward(call: Call, _obj: None, name: str, *rest: object) -> Answer:
        return handler(call, actions.get(name), *rest)

    return forward


async def set_pool_limit(call: Call, _obj: None, limit: int) -> Body:
    await actions.set_pool_limit(limit, authorizer(call))
    return []


async def clean_pool(call: Call, _obj: None, mode: str) -> Body:
    removed = await actions.clean_pool(services(call), mode, authorizer(call))
    return [[[name, usage] for name, usage in removed]]


def _interface() -> Interface:
    return Interface(
        INTERFACE,
        [
            Property("Name", "s", lambda i: i.name, emits_change="false"),
            Property("Path", "s", lambda i: i.path, emits_change="false"),
            Property("Type", "s", lambda i: i.type.value, emits_change="false"),
            Property("ReadOnly", "b", lambda i: i.read_only, emits_change="false"),
            Property("CreationTimestamp", "t", lambda i: i.crtime, emits_change="false"),
            Property("ModificationTimestamp", "t", lambda i: i.mtime, emits_change="false"),
            Property("Usage", "t", lambda i: i.usage, emits_change="false"),
            Property("Limit", "t", lambda i: i.limit, emits_change="false"),
            Property("UsageExclusive", "t", lambda i: i.usage_exclusive, emits_change="false"),
            Property("LimitExclusive", "t", lambda i: i.limit_exclusive, emits_change="false"),
            Method("Remove", remove),
            Method("Rename", rename, args("s")),
            Method("Clone", clone, args("s, b")),
            Method("MarkReadOnly", mark_read_only, args("b")),
            Method("SetLimit", set_limit, args("t")),
            Method("GetHostname", get_hostname, out_args=args("s")),
            Method("GetMachineID", get_machine_id, out_args=args("ay")),
            Method("GetMachineInfo", get_machine_info, out_args=args("a{ss}")),
            Method("GetOSRelease", get_os_release, out_args=args("a{ss}")),
        ],
    )


IMAGE_INTERFACE: Final = _interface()


class ImageObjects:
    """Resolves image object paths (a fresh lookup per call) and lists their labels (a fresh discovery)."""

    def find(self, call: Call, label: str) -> Image | None:
        name = bus_label_unescape(label)
        if not discovery.image_name_is_valid(name):
            return None
        try:
            return discovery.find(name)
        except OSError:
            return None

    def labels(self) -> list[str]:
        try:
            images = discovery.discover()
        except OSError:
            return []
        return [i.object_path.rsplit("/", 1)[1] for i in images.values()]
