"""The records the BE verbs return (re-exported by :mod:`beadm.be`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beadm.backend import BeRef, BootState, EspUsage
from beadm.record import record
from beadm.tree import BootEnv

if TYPE_CHECKING:
    from beadm import aptchroot, retention


@record
class Done:
    """What a changing command did: ``what`` it made or changed (a BE's name, a
    snapshot's full name, a mountpoint; "" when nothing was named, e.g. ``sync``), the
    BE's :class:`BeRef` where it made or changed one, and the ``warnings`` that did not
    stop it: the boot backend's hooks' (an EFI variable write refused, a BE left lean on
    a tight ESP) and those of finishing what a killed command left."""

    what: str = ""
    be: BeRef | None = None
    warnings: tuple[str, ...] = ()


@record
class BeInfo:
    """One BE as ``list`` shows it."""

    be: BootEnv
    running: bool
    next_boot: bool
    once: bool
    mounted_at: str | None  # where the BE root is mounted, if anywhere

    @property
    def state(self) -> str | None:
        """Its ``org.beadm:state``: ``failed`` (an upgrade failed in it), ``upgrading``
        (an upgrade runs), ``creating`` / ``destroying`` (half-created or half-destroyed:
        the next changing command removes it), ``renaming`` (a rename to finish), else
        None. Every BE is listed, whatever its state: one whose clean-up keeps failing is
        not hidden."""
        s = self.be.root.state
        return s.partition(":")[0] or None

    @property
    def active(self) -> str:
        flags = ("N" if self.running else "") + ("R" if self.next_boot else "")
        flags += "T" if self.once else ""
        return flags or "-"


@record
class TrialOutcome:
    """What ``trial_boot`` did: ``none`` (no trial pending), ``confirmed`` (the BE on trial
    is the default now), ``failed`` (a check failed: the previous default is back),
    ``given-up`` (another BE is running: the previous default stays), ``settled`` (the
    checks ran, but by then another command had ended the trial: nothing changed),
    ``ended`` (this boot is a trial's, ended by another command before ``trial_boot`` ran:
    its watchdog is stopped)."""

    kind: str
    be: str | None = None
    why: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # what did not stop it (the boot backend's hooks, clean-ups)


@record
class Pruned:
    """What ``prune`` decided (and, unless a dry run, did), with the pool's and the ESPs'
    space before (``esps`` None: unknown, or not looked at: no automatic BE may go)."""

    decisions: tuple[retention.Decision, ...]
    space: retention.Space
    policy: retention.Policy
    pool: str
    bes: tuple[retention.BeDecision, ...] = ()
    esps: tuple[EspUsage, ...] | None = None
    warnings: tuple[str, ...] = ()  # what did not stop it (the boot backend's hooks, clean-ups)

    def esp_free_after(self, esp: EspUsage) -> int:
        """The ESP's free bytes once the BEs that go are gone."""
        from beadm import retention

        return retention.esp_free_after(esp, {b.be.name for b in self.bes if b.destroy})


@record
class AutoSnapshot:
    """What the apt hook did: ``snapshot`` taken now, or ``same_run`` (an earlier dpkg
    session of this apt run took it), and the prune after it."""

    snapshot: str
    same_run: bool
    pruned: Pruned
    warnings: tuple[str, ...] = ()  # what did not stop it (the boot backend's hooks, clean-ups)


@record
class Upgraded:
    """What ``upgrade`` did: the new BE (ready to try), cloned from ``source``, and the
    package changes apt made in it (empty in a dry run)."""

    be: BeRef
    source: str
    apt_args: tuple[str, ...]
    changes: tuple[aptchroot.Change, ...]
    warnings: tuple[str, ...] = ()  # what did not stop it (the boot backend's hooks, clean-ups)


@record
class Listing:
    root: str
    pool: str
    bootfs: str | None  # None: not asked (listing(bootfs=False) where the backend decides R)
    state: BootState
    bes: tuple[BeInfo, ...]


#: Changing commands that mount, unmount or make ZFS (un)mount something: they must run in
