"""Image names, labels and metadata parsing (pure core)."""

from __future__ import annotations

from pymachined.images.discovery import image_name_is_valid
from pymachined.images.image import Image, ImageType
from pymachined.images.metadata import parse_env_bytes, parse_hostname, parse_machine_id
from pymachined.images.ops import limit_in_range


def test_image_names() -> None:
    for name in ("foo", ".hidden", "x.raw", "a_b", "ü"):
        assert image_name_is_valid(name), name
    for name in ("", ".", "..", "a/b", ".#foo", "a\x01b", "a\x7fb", "x" * 256):
        assert not image_name_is_valid(name), name


def test_object_paths_and_kinds() -> None:
    assert Image(".host", "/", ImageType.DIRECTORY).object_path == "/org/freedesktop/machine1/image/_2ehost"
    assert Image("x.raw", "/var/lib/machines/x.raw", ImageType.DIRECTORY).object_path.endswith("/x_2eraw")
    assert Image("v", "/usr/lib/machines/v", ImageType.DIRECTORY).is_vendor
    assert Image("h", "/", ImageType.DIRECTORY).is_host


def test_metadata_parsing() -> None:
    assert parse_hostname(b"  myhost  \n") == "myhost"
    assert parse_hostname(b"# c\n\nbar\n") == "bar"
    assert parse_hostname(b"") == ""
    assert parse_machine_id(b"0123456789abcdef0123456789abcdef\n") == bytes.fromhex("0123456789abcdef" * 2)
    assert parse_machine_id(b"01234567-89ab-cdef-0123-456789abcdef") == b""
    assert parse_machine_id(b"uninitialized\n") == b""
    assert parse_env_bytes(b'A="b c"\n') == {"A": "b c"}
    assert parse_env_bytes(b"A=\xff\n") == {}


def test_limit_range() -> None:
    assert limit_in_range(0) and limit_in_range(2**63 - 1) and limit_in_range(2**64 - 1)
    assert not limit_in_range(2**63)
