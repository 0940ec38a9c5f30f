from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beadm.errors import InvalidNameError
from beadm.names import MAX_NAME_LEN, check_be_name, split_be_snapshot

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
