import pytest

from pymachined.names import (
    bus_label_escape,
    bus_label_unescape,
    cescape,
    hostname_is_valid,
    machine_name_is_valid,
    unit_name_escape,
    unit_name_is_valid,
)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        (".host", "_2ehost"),
        ("foo", "foo"),
        ("my-ct", "my_2dct"),
        ("a-b.c", "a_2db_2ec"),
        ("1abc", "_31abc"),
        ("web01", "web01"),
        ("a_b", "a_5fb"),
        ("", "_"),
        ("ä", "_c3_a4"),
    ],
)
def test_bus_label_round_trip(name: str, label: str) -> None:
    assert bus_label_escape(name) == label
    assert bus_label_unescape(label) == name


def test_bus_label_unescape_is_lenient() -> None:
    assert bus_label_unescape("_61_2db_2ec") == "a-b.c"
    assert bus_label_unescape("1abc") == "1abc"
    assert bus_label_unescape("a_zz") == "a_zz"
    assert bus_label_unescape("ab_2") == "ab_2"


@pytest.mark.parametrize("name", ["a", "AB", "a.b", "a--b", "1abc", "x" * 64, "foo-bar.example"])
def test_valid_machine_names(name: str) -> None:
    assert hostname_is_valid(name)
    assert machine_name_is_valid(name)


@pytest.mark.parametrize(
    "name", ["", ".host", "-ab", "ab-", "a-.b", ".a", "a.", "a..b", "a_b", "x" * 65, "ä", "a b", "a/b"]
)
def test_invalid_machine_names(name: str) -> None:
    assert not machine_name_is_valid(name)


@pytest.mark.parametrize(
    ("unit", "valid"),
    [
        ("machine-foo.scope", True),
        ("systemd-nspawn@x.service", True),
        ("a.slice", True),
        ("foo", False),
        ("foo.bar", False),
        ("@x.service", False),
        ("a@.service", False),
        ("machine-my\\x2dct.scope", True),
    ],
)
def test_unit_names(unit: str, valid: bool) -> None:
    assert unit_name_is_valid(unit) is valid


def test_unit_name_escape() -> None:
    assert unit_name_escape("my-ct") == "my\\x2dct"
    assert unit_name_escape("a.b") == "a.b"
    assert unit_name_escape(".a") == "\\x2ea"


def test_cescape() -> None:
    assert cescape("machine-my\\x2dct.scope") == "machine-my\\\\x2dct.scope"
    assert cescape("a\"b'c") == "a\\\"b\\'c"
    assert cescape("tab\there\n") == "tab\\there\\n"
    assert cescape("ä") == "\\303\\244"
    assert cescape("\x01") == "\\001"
