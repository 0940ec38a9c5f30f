"""``trial-boot`` (``beadm-trial.service``): settle a pending trial at boot."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from beadm import activate
from beadm.backend import PendingTrial
from beadm.errors import BeadmError
from beadm.record import replace
from beadm.results import TrialOutcome

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def trial_boot(ctx: BeContext, checks: Callable[[], list[str]], *,
               reboot: bool = True,
               disarm: Callable[[], list[str]] | None = None) -> TrialOutcome:
    """At boot (``beadm-trial.service``): settle a pending trial. Running the BE on trial:
    ``checks()`` pass -> it is activated (the trial ends); they fail -> the previous
    default is restored and (``reboot``) the machine reboots into it (the watchdog stays
    armed: a reboot that hangs is reset too). Running another BE: the trial did not boot
    (or was left from the menu) and is given up.

    Three steps (beadm(8), TRIAL BOOTS). 1: under the lock, what is pending. 2: the
    checks, in the host's own context: the lock released and the backend's session
    closed (no ESP mounted, not in beadm's private mount namespace), since they look at
    the host as its services see it and may take minutes. 3: the decision under the
    lock again, after verifying that the same trial is still the pending one (a command
    run meanwhile may have settled it: then nothing is changed, ``settled``). Once the
    checks passed, every way out of step 3 (confirmed, settled, the lock not had in
    time, the activation failing) stops the trial's watchdog with ``disarm()``: its
    notes go into the outcome, or are logged as warnings when an error follows."""
    state, end = ctx.backend.trial_state, ctx.backend.end_trial
    with ctx._changing(boot=True) as tree:
        running = ctx.running_name()
        refs = [ctx._ref(b, running) for b in tree.bes()]
        trial = state(refs)
        if trial is not None and trial.be != running:
            ctx._warn(end(refs))
            return TrialOutcome("given-up", trial.be, (f"{running} is running",))
        ended = trial is None and ctx.backend.booted_trial()
    if trial is None:
        if not ended:
            return TrialOutcome("none")
        # booted as a trial that another command ended before this ran (the admin's
        # activate): its watchdog would reset a host nobody asked to reset
        return TrialOutcome("ended", running, tuple(_disarmed(disarm)))
    ctx._release()  # (the hold is over: nothing of beadm's stays mounted)
    problems = run_checks(checks)
    if problems:
        with ctx._changing(boot=True) as tree:
            refs = [ctx._ref(b, running) for b in tree.bes()]
            if not _same_trial(state(refs), trial):
                return TrialOutcome("settled", trial.be, problems)
            ctx._warn(end(refs))
        if reboot:
            ctx.runner.run(["systemctl", "reboot", "--no-block"])
        return TrialOutcome("failed", trial.be, problems)
    outcome: TrialOutcome | None = None
    try:
        with ctx._changing(boot=True) as tree:
            refs = [ctx._ref(b, running) for b in tree.bes()]
            if not _same_trial(state(refs), trial):
                outcome = TrialOutcome("settled", trial.be)
            else:
                activate.activate_locked(ctx, tree, trial.be, temporary=False, force=False,
                                         on_report=None)
                outcome = TrialOutcome("confirmed", trial.be)
    finally:
        notes = _disarmed(disarm)
        if outcome is None:  # an error follows: the notes go to the log
            for note in notes:
                log.warning("%s", note)
    assert outcome is not None
    return replace(outcome, why=outcome.why + tuple(notes))


def run_checks(checks: Callable[[], list[str]]) -> tuple[str, ...]:
    """The health checks' failures; checks that cannot run count as a failure (the
    trial then ends as a failed one instead of waiting for its watchdog)."""
    try:
        return tuple(checks())
    except (BeadmError, OSError) as exc:
        return (f"the health checks could not run: {exc}",)


def _same_trial(now: PendingTrial | None, then: PendingTrial) -> bool:
    """Whether the pending trial ``now`` is still the trial ``then`` (same BE and entry)."""
    return now is not None and (now.be, now.base) == (then.be, then.base)


def _disarmed(disarm: Callable[[], list[str]] | None) -> list[str]:
    """Stop the trial's watchdog (``disarm``); its notes, also when it fails."""
    if disarm is None:
        return []
    try:
        return disarm()
    except OSError as exc:
        return [f"the trial's watchdog could not be stopped ({exc}): the machine resets when "
                "it expires"]
