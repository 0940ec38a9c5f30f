"""Issue 25 item 8: Debian version comparison (Debian policy 5.6.12), checked against
``dpkg --compare-versions`` on this host, and the package diff that says "downgraded"."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beadm import upgrade as upg
from beadm.debversion import compare

DPKG = shutil.which("dpkg")


def dpkg_compare(a: str, b: str) -> int:
    assert DPKG is not None
    def holds(op: str) -> bool:
        return subprocess.run([DPKG, "--compare-versions", a, op, b],
                              check=False).returncode == 0
    return -1 if holds("lt") else 1 if holds("gt") else 0


@pytest.mark.parametrize(("a", "b", "sign"), [
    ("1.0", "1.0", 0),
    ("1.0", "1.0-0", 0),          # no revision is revision 0
    ("1.00", "1.0", 0),           # digits compare as numbers
    ("1.0~rc1", "1.0", -1),       # a tilde sorts before the end
    ("1.0~~", "1.0~~a", -1),
    ("1.0~~a", "1.0~", -1),
    ("1.0~", "1.0", -1),
    ("1.0", "1.0a", -1),
    ("1.0a", "1.0+", -1),         # letters before non-letters
    ("1.0+", "1.0.", -1),
    ("1:0.9", "2.0", 1),          # the epoch first
    ("0:2.0", "2.0", 0),
    ("2.0-1", "2.0-1+deb12u1", -1),
    ("6.8.12-4", "6.8.12-10", -1),
    ("1.2-3-4", "1.2-3-5", -1),   # the revision after the last hyphen
    ("10", "9", 1),
])
def test_known_orders(a: str, b: str, sign: int) -> None:
    assert compare(a, b) == sign
    assert compare(b, a) == -sign


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_part = st.text(alphabet=_ALNUM[:3] + _ALNUM[26:29] + "0123456789.+~", max_size=8)


@st.composite
def versions(draw: st.DrawFn) -> str:
    epoch = draw(st.one_of(st.just(""), st.integers(0, 3).map(lambda e: f"{e}:")))
    upstream = str(draw(st.integers(0, 12))) + draw(_part)
    if epoch:
        upstream += draw(st.sampled_from(["", ":1"]))
    revision = draw(st.one_of(st.just(""), _part.filter(bool).map(lambda r: f"-{r}")))
    if revision:
        upstream += draw(st.sampled_from(["", "-1", "-a~"]))
    return epoch + upstream + revision


@pytest.mark.skipif(DPKG is None, reason="dpkg is not installed")
@settings(max_examples=300, deadline=None)
@given(versions(), versions())
def test_compare_is_dpkgs(a: str, b: str) -> None:
    assert compare(a, b) == dpkg_compare(a, b), (a, b)


@pytest.mark.skipif(DPKG is None, reason="dpkg is not installed")
@settings(max_examples=100, deadline=None)
@given(versions())
def test_compare_with_small_changes_is_dpkgs(a: str) -> None:
    for b in (a + "~", a + "a", a + ".0", a + "+1", "1:" + a if ":" not in a else a):
        assert compare(a, b) == dpkg_compare(a, b), (a, b)


def test_the_package_diff_says_downgraded() -> None:
    before = {"a": "2.0-1", "b": "1.0~rc1", "c": "1:0.9"}
    after = {"a": "1.9-3", "b": "1.0", "c": "2.0"}
    assert upg.diff(before, after) == (
        upg.Change("downgraded", "a", "2.0-1", "1.9-3"),
        upg.Change("upgraded", "b", "1.0~rc1", "1.0"),
        upg.Change("downgraded", "c", "1:0.9", "2.0"),
    )
    assert upg.Change("downgraded", "a", "2.0-1", "1.9-3").line() == \
        "downgraded a 2.0-1 -> 1.9-3"
