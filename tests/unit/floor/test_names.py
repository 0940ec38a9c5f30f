from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beadm.errors import InvalidNameError
from beadm.names import (
    MAX_NAME_LEN,
    check_be_name,
    check_new_be_name,
    same_but_case,
    split_be_snapshot,
)

ALLOWED = string.ascii_letters + string.digits + "-_.:"


@pytest.mark.parametrize("name", ["pve-1", "a.b", "test", "test2", "x_y:z", "A", "1"])
def test_valid(name: str) -> None:
    assert check_be_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a/b", "a@b", "a#b", "a%b", "a b", "-x", "x:", ".", "..", "ä", "a\tb", "a\nb", "*", "a?"],
)
def test_invalid(name: str) -> None:
    with pytest.raises(InvalidNameError) as exc:
        check_be_name(name)
    assert "\n" not in str(exc.value)


def test_too_long() -> None:
    check_be_name("a" * MAX_NAME_LEN)
    with pytest.raises(InvalidNameError):
        check_be_name("a" * (MAX_NAME_LEN + 1))


@given(st.text(alphabet=ALLOWED, min_size=1, max_size=MAX_NAME_LEN))
def test_allowed_alphabet(name: str) -> None:
    bad = name.startswith("-") or name.endswith(":") or name in (".", "..")
    if bad:
        with pytest.raises(InvalidNameError):
            check_be_name(name)
    else:
        assert check_be_name(name) == name


@given(st.text(min_size=0, max_size=120))
def test_anything_else_is_rejected_or_valid(name: str) -> None:
    ok = (
        0 < len(name) <= MAX_NAME_LEN
        and all(c in ALLOWED for c in name)
        and not name.startswith("-")
        and not name.endswith(":")
        and name not in (".", "..")
    )
    if ok:
        assert check_be_name(name) == name
    else:
        with pytest.raises(InvalidNameError):
            check_be_name(name)


def test_split() -> None:
    assert split_be_snapshot("pve-1") == ("pve-1", None)
    assert split_be_snapshot("pve-1@s.1") == ("pve-1", "s.1")
    with pytest.raises(InvalidNameError):
        split_be_snapshot("pve-1@")
    with pytest.raises(InvalidNameError):
        split_be_snapshot("@x")
    with pytest.raises(InvalidNameError):
        split_be_snapshot("a@b@c")


@pytest.mark.parametrize("name", ["a:b", "pve:1", ":x"])
def test_new_be_name_must_be_valid_on_fat(name: str) -> None:
    with pytest.raises(InvalidNameError, match="FAT") as exc:
        check_new_be_name(name)
    assert "\n" not in str(exc.value)


def test_existing_be_name_with_colon_can_still_be_named() -> None:
    assert check_be_name("a:b") == "a:b"
    assert check_new_be_name("pve-2.b_c") == "pve-2.b_c"


def test_same_but_case() -> None:
    assert same_but_case("PVE-1", ["pve-1", "pve-2"]) == "pve-1"
    assert same_but_case("pve-1", ["pve-1", "pve-2"]) is None  # the same name: not a clash
    assert same_but_case("Pve-3", ["pve-1"]) is None


@pytest.mark.parametrize("name", ["a b", "a/b", "x#y"])
def test_a_new_name_is_never_told_that_colon_is_allowed(name: str) -> None:
    """Issue 25.7: the hint for a new BE name lists only what a new name may hold."""
    with pytest.raises(InvalidNameError) as exc:
        check_new_be_name(name)
    assert "':'" not in exc.value.message and "'-', '_', '.'" in exc.value.message
    with pytest.raises(InvalidNameError) as exc:  # an existing BE's name may have one
        check_be_name(name)
    assert "':'" in exc.value.message
