"""What the commands print: ``list``'s table and ``--json``, ``prune``'s and
``upgrade``'s results, and the helpers every line printed goes through (:func:`shown`,
:func:`human`). ``json`` is imported only where ``--json`` is asked for (issue 15)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from beadm.backend import BootBackend
    from beadm.be import BeInfo, Listing, Pruned, Upgraded
    from beadm.rollback_guard import Report
    from beadm.zfs import Dataset


def shown(text: str, *, keep_tabs: bool = False) -> str:
    """``text`` safe to print on one line: every unprintable character (control
    characters, line separators, undecodable bytes kept as lone surrogates) escaped;
    tabs too unless ``keep_tabs``."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or (keep_tabs and c == "\t"):
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


def human(n: int) -> str:
    """Bytes the way ``zfs list`` shows them (1024-based, three significant digits)."""
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            break
    if value < 10:
        return f"{value:.2f}{unit}"
    if value < 100:
        return f"{value:.1f}{unit}"
    return f"{value:.0f}{unit}"


#: ``output_version`` of every ``--json`` object (as OpenZFS's ``zfs list -j`` has): the
#: major version changes when a key goes or changes its meaning, the minor when one is added.
JSON_VERSION = (1, 0)

#: list's columns, as its header names them (``-o`` picks them by these names).
LIST_COLUMNS = ("BE", "Active", "Mountpoint", "Space", "Created", "Description")


def output_version(command: str) -> dict[str, Any]:
    """The ``output_version`` key of ``beadm COMMAND --json``, its first key."""
    return {"command": f"beadm {command}", "vers_major": JSON_VERSION[0],
            "vers_minor": JSON_VERSION[1]}


def list_columns(spec: str) -> list[int]:
    """``list -o``: the indexes of the columns named (case-insensitive, as the header
    names them; the first also as ``BE/Dataset/Snapshot``), or a usage error."""
    from beadm.errors import UsageError

    names = {c.lower(): i for i, c in enumerate(LIST_COLUMNS)}
    names["be/dataset/snapshot"] = 0
    picked = []
    for word in spec.split(","):
        if word.strip().lower() not in names:
            raise UsageError(f"list: -o: unknown column {shown(word)!r} (columns: "
                             f"{', '.join(LIST_COLUMNS)})")
        picked.append(names[word.strip().lower()])
    return picked


def _when(epoch: int) -> str:
    # time (built in), not datetime (an import for list): the same local time and format
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def sorted_bes(infos: Sequence[BeInfo], key: str | None, reverse: bool) -> list[BeInfo]:
    def k(i: BeInfo) -> tuple[Any, str]:
        if key == "name":
            return (i.be.name, i.be.name)
        if key == "space":
            return (i.be.space, i.be.name)
        return (i.be.root.creation, i.be.name)

    return sorted(infos, key=k, reverse=reverse)


def warnings(found: Sequence[str], err: TextIO) -> int:
    """What did not stop a command (its result's ``warnings``), one line each on stderr;
    the command's exit status (0: warnings do not fail it)."""
    for w in found:
        print(f"beadm: warning: {shown(w)}", file=err)
    return 0


def list_notes(listing: Listing, err: TextIO) -> None:
    """list: the boot backend's warnings and the kernel pins, on stderr."""
    for w in listing.state.warnings:
        print(f"beadm: warning: {w}", file=err)
    for pin in listing.state.pins:
        print(f"beadm: note: {pin.describe()}", file=err)


def list_json(listing: Listing, infos: list[BeInfo], reports: Mapping[str, Report | None],
              out: TextIO) -> None:
    """list --json (the schema is :data:`beadm.cli.parser.LIST_JSON_SCHEMA`)."""
    import json

    json.dump({"output_version": output_version("list"), **_json(listing, infos, reports)},
              out, indent=2)
    out.write("\n")


def list_table(infos: list[BeInfo], args: argparse.Namespace, out: TextIO) -> None:
    """list's table (-a, -s, -D, -H, -p: exact bytes and epoch seconds, -o: the columns)."""
    size, when = (str, str) if args.parsable else (human, _when)
    rows: list[list[str]] = []
    for i in infos:
        space = i.be.space_without_snapshots if args.nosnap else i.be.space
        rows.append(
            [
                i.be.name,
                i.active,
                shown(i.mounted_at or "-"),
                size(space),
                when(i.be.root.creation),
                (f"[{i.state}] " if i.state else "") + (shown(i.be.description) or "-"),
            ]
        )
        if args.all:
            for d in i.be.datasets:
                rows.append(_sub_row(d, args.nosnap, parsable=args.parsable))
        if args.all or args.snapshots:
            for s in i.be.snapshots:
                rows.append(_sub_row(s, args.nosnap, i.be.description,
                                     parsable=args.parsable))
    header = list(LIST_COLUMNS)
    if args.all or args.snapshots:
        header[0] = "BE/Dataset/Snapshot"
    if args.columns is not None:
        picked = list_columns(args.columns)
        header = [header[c] for c in picked]
        rows = [[r[c] for c in picked] for r in rows]
    table(out, header, rows, script=args.script)


def _sub_row(d: Dataset, nosnap: bool, inherited: str | None = None, *,
             parsable: bool = False) -> list[str]:
    """A dataset or snapshot row. A snapshot shows its description only where it is its
    own (the apt hook's "apt: upgrade ..."), not the BE's, which it inherits."""
    space = d.used - d.usedbysnapshots if nosnap else d.used
    where = shown(d.mountpoint) if (d.mounted and d.mountpoint) else "-"
    own = d.description if inherited is not None and d.description != inherited else ""
    size, when = (str, str) if parsable else (human, _when)
    return ["  " + d.name, "-", where, size(space), when(d.creation), shown(own) or "-"]


def table(out: TextIO, header: list[str], rows: list[list[str]], *, script: bool) -> None:
    if script:
        for r in rows:
            print("\t".join(c.strip() for c in r), file=out)
        return
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        cells = [v.ljust(widths[c]) for c, v in enumerate(r)]
        print("  ".join(cells).rstrip(), file=out)


def _json(
    listing: Listing, infos: list[BeInfo], reports: Mapping[str, Report | None]
) -> dict[str, Any]:
    pins = {p.be: {"kver": p.kver, "next_boot_only": p.once, "present": p.present}
            for p in listing.state.pins}

    def guard(name: str) -> list[str] | None:
        r = reports.get(name)
        return None if r is None else list(r.cluster)

    def drift(name: str) -> list[str] | None:
        r = reports.get(name)
        return None if r is None else [d.path for d in r.drift]

    return {
        "root": listing.root,
        "pool": listing.pool,
        "bootfs": listing.bootfs or None,
        "warnings": list(listing.state.warnings),
        "bes": [
            {
                "name": i.be.name,
                "dataset": i.be.dataset,
                "active": i.active,
                "running": i.running,
                "next_boot": i.next_boot,
                "once": i.once,
                "trial_tries": listing.state.trial_tries if i.be.name == listing.state.trial
                else None,
                "mountpoint": i.mounted_at,
                "space": i.be.space,
                "space_without_snapshots": i.be.space_without_snapshots,
                "created": i.be.root.creation,
                "description": i.be.description,
                "state": i.state,
                "origin": i.be.root.origin or None,
                "kernel_pin": pins.get(i.be.name),
                "datasets": [
                    {
                        "name": d.name,
                        "mountpoint": d.mountpoint,
                        "canmount": d.canmount,
                        "used": d.used,
                        "created": d.creation,
                        "origin": d.origin or None,
                    }
                    for d in i.be.datasets
                ],
                "snapshots": [
                    {"name": s.name, "used": s.used, "created": s.creation} for s in i.be.snapshots
                ],
                "cluster_guard": guard(i.be.name),
                "network_drift": drift(i.be.name),
            }
            for i in infos
        ],
    }


def print_pruned(pruned: Pruned, args: argparse.Namespace, out: TextIO) -> None:
    dry = bool(args.dry_run)
    policy = pruned.policy
    gone = {b.be.name for b in pruned.bes if b.destroy}
    if args.json:
        import json

        json.dump({
            "output_version": output_version("prune"),
            "pool": pruned.pool,
            "pool_free": pruned.space.free,
            "pool_size": pruned.space.size,
            "policy": {"keep": policy.keep, "keep_important": policy.keep_important,
                       "pool_min_free": str(policy.pool_min_free),
                       "esp_min_free": str(policy.esp_min_free)},
            "floor": policy.pool_min_free.of(pruned.space.size),
            "esps": None if pruned.esps is None else [
                {"uuid": e.uuid, "size": e.size, "free": e.free,
                 "floor": policy.esp_min_free.of(e.size),
                 "free_after": pruned.esp_free_after(e)}
                for e in pruned.esps],
            "dry_run": dry,
            "bes": [
                {"name": b.be.name, "created": b.be.created, "used": b.be.used,
                 "important": b.be.important, "pinned": b.be.pinned, "failed": b.be.failed,
                 "held": b.be.held, "destroy": b.destroy, "reason": b.reason}
                for b in pruned.bes
            ],
            "snapshots": [
                {"name": d.snap.name, "be": d.snap.be, "created": d.snap.created,
                 "used": d.snap.used, "important": d.snap.important,
                 "pinned": d.snap.pinned, "clones": list(d.snap.clones),
                 "destroy": d.destroy, "reason": d.reason}
                for d in pruned.decisions
            ],
        }, out, indent=2)
        out.write("\n")
        return

    def action(destroy: bool) -> str:
        return ("would destroy" if dry else "destroyed") if destroy else "keep"

    be_rows = [[shown(b.be.name), _when(b.be.created), human(b.be.used), action(b.destroy),
                b.reason] for b in pruned.bes if b.destroy or args.verbose]
    rows = [[shown(d.snap.name), _when(d.snap.created), human(d.snap.used), action(d.destroy),
             d.reason] for d in pruned.decisions
            if (d.destroy or args.verbose) and (args.verbose or d.snap.be not in gone)]
    if be_rows:
        table(out, ["BE", "Created", "Used", "Action", "Reason"], be_rows, script=False)
    if rows:
        if be_rows:
            print(file=out)
        table(out, ["Snapshot", "Created", "Used", "Action", "Reason"], rows, script=False)
    if args.verbose and pruned.esps is not None:
        for e in pruned.esps:
            after = pruned.esp_free_after(e)
            floor = policy.esp_min_free
            shown_floor = str(floor) if floor.percent is None else \
                f"{floor} = {human(floor.of(e.size))}"
            print(f"ESP {e.uuid}: {human(e.free)} free of {human(e.size)}"
                  + (f", {human(after)} after" if after != e.free else "")
                  + f" (esp_min_free {shown_floor})", file=out)
    if not (rows or be_rows) and args.verbose:
        print("no automatic snapshots or BEs", file=out)



def print_upgraded(done: Upgraded, args: argparse.Namespace, backend: BootBackend, *,
                   out: TextIO, err: TextIO) -> None:
    """upgrade: the package changes and how to try the new BE (as ``backend`` can), or
    --json (:data:`beadm.cli.parser.UPGRADE_JSON_SCHEMA`)."""
    dry = bool(args.dry_run)
    if args.json:
        import json

        json.dump({"output_version": output_version("upgrade"),
                   "be": done.be.name, "dataset": done.be.dataset, "source": done.source,
                   "apt_args": list(done.apt_args), "dry_run": dry,
                   "changes": [{"kind": c.kind, "package": c.package, "old": c.old,
                                "new": c.new} for c in done.changes]}, out, indent=2)
        out.write("\n")
        return
    for c in done.changes:
        print(shown(c.line()), file=out)
    if dry:
        return
    if not done.changes:
        print(f"beadm: apt changed no package in BE {done.be.name}", file=err)
    # suggest what works on this host: no trial boots on GRUB (activate --trial exits 7)
    how = (f"'beadm activate --trial {done.be.name}' and reboot to try it"
           if backend.trials() else
           f"'beadm activate -t {done.be.name}' and reboot to try it once")
    print(f"BE {done.be.name} is ready (cloned from {done.source}, which keeps running and "
          f"booting): {how}", file=out)
