"""The cached Debian 13 (trixie) tree for the trixie test (tests/boot/test_trixie.py).

``${BEADM_TRIXIE_CACHE:-/var/cache/beadm-trixie}/<hash>/tree``, hash = sha256 of the recipe
(``lab/trixie/build-tree``), built by that script into ``.tmp-*`` and renamed into place after
``complete`` is written, under a lock; other hashes under this cache root (not the lab's:
``/var/cache/beadm-lab`` is never touched) are removed. Downloads are cached in ``<cache>/apt/``.
Separate from the lab image and the Proxmox-like machine: it changes neither recipe.

    python3 lab/trixie/trixie.py   # build (or reuse) the tree, print its path

Python 3.11 standard library only.
"""

from __future__ import annotations

import os
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


if __name__ == "__main__":
    print(build_tree(force="--force" in sys.argv[1:]))
