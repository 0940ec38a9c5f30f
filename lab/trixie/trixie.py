"""The cached Debian 13 (trixie) tree for the trixie test (tests/boot/test_trixie.py).

``${BEADM_TRIXIE_CACHE:-/var/cache/beadm-trixie}/<hash>/tree``, hash = sha256 of the recipe
(``lab/trixie/build-tree``), built by that script into ``.tmp-*`` and renamed into place after
``complete`` is written, under a lock; other hashes under this cache root (not the lab's:
``/var/cache/beadm-lab`` is never touched) are removed. Downloads are cached in ``<cache>/apt/``.
Separate from the lab image and the Proxmox-like machine: it changes neither recipe.

    python3 lab/trixie/trixie.py                # build (or reuse) the tree, print its path
    python3 lab/trixie/trixie.py --build-deps   # the same with beadm's build deps (build-deps)

Python 3.11 standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIXIE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TRIXIE_DIR.parent))
import labkit  # noqa: E402  (lab/labkit.py: recipe_hash, apt_mirrors, log, HEX)

RECIPE = ("trixie/build-tree",)
BUILD = TRIXIE_DIR / "build-tree"
BUILD_DEPS_RECIPE = ("trixie/build-deps",)
BUILD_DEPS = TRIXIE_DIR / "build-deps"
CONTROL = TRIXIE_DIR.parents[1] / "debian" / "control"
ENTER = TRIXIE_DIR / "enter"


def cache_root() -> Path:
    return Path(os.environ.get("BEADM_TRIXIE_CACHE", "/var/cache/beadm-trixie"))


def apt_archives() -> Path:
    """Downloaded .debs, kept between builds and test runs (bind-mounted into the tree)."""
    d = cache_root() / "apt" / "archives"
    (d / "partial").mkdir(parents=True, exist_ok=True)
    return d


def tree_dir() -> Path:
    return cache_root() / labkit.recipe_hash(RECIPE)


def build_depends() -> str:
    """debian/control's Build-Depends field (what the build tree installs)."""
    m = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", CONTROL.read_text(encoding="utf-8"),
                  re.M)
    if not m:
        raise SystemExit(f"no Build-Depends in {CONTROL}")
    return " ".join(m.group(1).split())


def build_deps_dir() -> Path:
    """``<tree hash>/build-<hash>``: keyed by its recipe, the base tree and the Build-Depends."""
    salt = tree_dir().name + "\0" + build_depends()
    return tree_dir() / f"build-{labkit.recipe_hash(BUILD_DEPS_RECIPE, salt)}"


def build_tree(force: bool = False) -> Path:
    """Build the trixie tree unless a complete one is cached; return ``<hash>/tree``."""
    target = tree_dir()
    if (target / "complete").exists() and not force:
        labkit.log(f"trixie tree: cached at {target}")
        return target / "tree"
    with labkit.cache_lock(cache_root()):
        if (target / "complete").exists() and not force:
            return target / "tree"
        root = cache_root()
        for entry in root.iterdir():  # only this cache root's own stale entries
            if entry != target and (labkit.HEX.match(entry.name) or entry.name.startswith(".tmp-")):
                labkit.log(f"trixie tree: removing stale {entry}")
                shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        mirror, security = labkit.apt_mirrors()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
        labkit.log(f"trixie tree: building {target.name} in {tmp}")
        start = time.monotonic()
        env = dict(os.environ, MIRROR=mirror, SECURITY_MIRROR=security,
                   APT_CACHE=str(root / "apt"))
        try:
            subprocess.run([str(BUILD), str(tmp)], env=env, check=True)
        except (subprocess.CalledProcessError, KeyboardInterrupt):
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit("trixie tree: build FAILED") from None
        (tmp / "complete").write_text(f"built in {time.monotonic() - start:.0f} s\n")
        tmp.chmod(0o755)
        tmp.rename(target)
        labkit.log(f"trixie tree: built in {time.monotonic() - start:.0f} s at {target}")
        return target / "tree"


def build_deps_tree(force: bool = False) -> Path:
    """The trixie tree with beadm's build dependencies and lintian installed (a copy of
    :func:`build_tree`'s), cached unless ``force``; return ``<hash>/build-<hash>/tree``."""
    base = build_tree()
    target = build_deps_dir()
    if (target / "complete").exists() and not force:
        labkit.log(f"trixie build tree: cached at {target}")
        return target / "tree"
    with labkit.cache_lock(cache_root()):
        if (target / "complete").exists() and not force:
            return target / "tree"
        for entry in target.parent.iterdir():  # only this tree's own stale build trees
            if entry != target and entry.name.startswith(("build-", ".tmp-build-")):
                labkit.log(f"trixie build tree: removing stale {entry}")
                shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        labkit.log(f"trixie build tree: building {target.name} in {tmp}")
        start = time.monotonic()
        env = dict(os.environ, APT_CACHE=str(cache_root() / "apt"))
        try:
            subprocess.run([str(BUILD_DEPS), str(tmp), str(base), str(CONTROL)], env=env,
                           check=True)
        except (subprocess.CalledProcessError, KeyboardInterrupt):
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit("trixie build tree: build FAILED") from None
        (tmp / "complete").write_text(f"built in {time.monotonic() - start:.0f} s\n")
        tmp.chmod(0o755)
        tmp.rename(target)
        labkit.log(f"trixie build tree: built in {time.monotonic() - start:.0f} s at {target}")
        return target / "tree"


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--build-deps" in args:
        print(build_deps_tree(force="--force" in args))
    else:
        print(build_tree(force="--force" in args))
