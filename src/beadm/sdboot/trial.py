"""Trial boots (``beadm activate --trial NAME``): systemd-boot boot counting, beadm's way.

How systemd-boot 252 (Debian 12) picks what boots, read from its source and seen in the lab
(``/work/shared/docs/lab.md``): ``LoaderEntryOneShot``, then ``LoaderEntryDefault``, then
``loader.conf``'s ``default``, each a glob matched against the entry ids in sort order (the
first match wins, and only a pattern that matches *nothing* passes on to the next); the id
is the file name, lowercased, **counter included** (``x+2-1.conf``); entries with no tries
left (``+0-M``) sort last but still match. So ``default x*`` boots a bad ``x+0-3.conf`` when
nothing else matches: a glob that matches the bad entry defeats the fallback.

beadm's trial therefore uses a glob that stops matching once the tries are spent:

* every ESP gets a copy of NAME's default entry named ``beadm-NAME-KVER+N.conf`` (N tries,
  ``panic=10`` added to its options unless they set ``panic=``, so that a kernel panic or
  the initramfs's rescue shell reboots instead of waiting for a keyboard; and, unless the
  watchdog is off, ``softdog.soft_margin=S softdog.soft_active_on_boot=1``: the trial BE's
  ``beadm-trial-watchdog.service`` loads the kernel's software watchdog early, armed with
  nobody feeding it, so a boot that hangs (emergency mode waiting for a password, a unit
  that never finishes, a stuck ``beadm-trial.service``) is reset after S seconds and the
  try is spent; ``beadm trial-boot`` disarms it once the checks passed; see
  :mod:`beadm.watchdog`);
* ``loader.conf`` (every ESP) and the record name the BE running now, as ``activate`` would:
  the fallback;
* ``LoaderEntryDefault`` = ``beadm-NAME-KVER+[123456789]*``: it matches the counted entry
  while it has tries left, and nothing once systemd-boot has counted it down to ``+0``;
  then ``loader.conf``'s exact id (the running BE) boots. No EFI variable, no trial: the
  loader.conf fallback alone could not tell a spent entry from a fresh one.

The loader decrements the counter only on the ESP it booted from; beadm never rewrites a
counted entry (``sync`` and ``check`` keep them as they are) and removes them all, on every
ESP, when the trial ends: confirmed (``activate NAME``) or given up (checks failed).
"""

from __future__ import annotations

import re

from beadm import watchdog as wd
from beadm.esp import entries as ent
from beadm.record import record

TRIES_DEFAULT = 3
TRIES_MAX = 9  # one digit: the pattern's class lists the digits that mean "tries left"
_LEFT = "[123456789]"
_PATTERN_TAIL = f"+{_LEFT}*"
PANIC_SECONDS = 10


def counted_fname(fname: str, tries: int) -> str:
    """``beadm-x-6.1.conf`` -> ``beadm-x-6.1+3.conf``."""
    assert fname.endswith(ent.SUFFIX) and 1 <= tries <= TRIES_MAX
    return f"{fname[: -len(ent.SUFFIX)]}+{tries}{ent.SUFFIX}"


def pattern_for(fname: str) -> str:
    """The ``LoaderEntryDefault`` glob of a trial of entry ``fname`` (its plain name)."""
    return fname[: -len(ent.SUFFIX)] + _PATTERN_TAIL


def base_of_pattern(value: str | None) -> str | None:
    """The plain entry name a trial pattern stands for, None when ``value`` is not one."""
    if not value or not value.endswith(_PATTERN_TAIL) or not value.startswith(ent.PREFIX):
        return None
    return value[: -len(_PATTERN_TAIL)] + ent.SUFFIX


def is_counted(fname: str) -> bool:
    return ent.tries_left(fname) is not None


def trial_options(options: str, watchdog: int = wd.DEFAULT) -> str:
    """The trial entry's kernel options: ``panic=`` added unless the admin set one; the
    software watchdog armed for ``watchdog`` seconds (0: not) unless the options already
    configure ``softdog``."""
    out = options
    if not re.search(r"(^|\s)panic=", out):
        out = f"{out} panic={PANIC_SECONDS}"
    if watchdog and not re.search(r"(^|\s)softdog\.", out):
        out = f"{out} softdog.soft_margin={watchdog} softdog.soft_active_on_boot=1"
    return out.strip()


@record
class Trial:
    """A pending trial as the ESPs and the EFI variable show it."""

    be: str
    base: str  # the plain entry name (``beadm-x-6.1.conf``)
    tries_left: dict[str, int]  # ESP uuid -> tries left in its counted entry (absent: none)

    @property
    def spent(self) -> bool:
        """No ESP has a try left: the loader boots the fallback."""
        return not any(n > 0 for n in self.tries_left.values())
