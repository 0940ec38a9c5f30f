"""The Proxmox-like machine of the beadm lab: its cached installation and `lab/pvelab run`.

The machine (built once per lab image, cached in ``<image dir>/machine-<hash>/``): two 8 GiB disks
laid out as the Proxmox installer does (p1 BIOS boot, p2 FAT32 ESP with volume ids ``C0DE-0001`` /
``C0DE-0002``, p3 ZFS), ``rpool`` mirrored over the p3s, ``rpool/ROOT/pve-1`` at ``/``, systemd-boot
and the kernels on both ESPs written by the proxmox-boot-tool fixture, and ``vars.fd`` (fresh OVMF
variables). Every pvelab call boots copy-on-write overlays of the disks and a copy of vars.fd.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import labkit
from labkit import NO_RESULT, Disk, Share, log

DISK_MIB = 8192
ESP_MIB = 512
FIRMWARE_MARKER = "BdsDxe"  # OVMF's first line on the serial console
GRUB_MARKER = "GNU GRUB"  # SeaBIOS prints nothing on serial: GRUB's menu (serial terminal) is first
FIRMWARE_SILENCE = 180  # seconds; it usually prints within 10-30 s, even under load
ESP_VOLIDS = ("C0DE-0001", "C0DE-0002")
SERIALS = ("pve-disk1", "pve-disk2")
MOK_OWNER = "605dab50-e046-4300-abb6-3dd810dd8b23"  # shim's owner GUID for MokList entries


def build_machine(variant: str = "uefi") -> Path:
    """Install the Proxmox-like machine of ``variant`` (labkit.VARIANTS) unless a complete one
    is cached; return its dir. "legacy": SeaBIOS, GRUB on the ESPs through the fixture's GRUB
    mode; "secureboot": made from a copy of the UEFI machine (make_secureboot). Each is cached
    beside the others."""
    image = labkit.build_image()
    if variant == "secureboot":
        uefi = build_machine("uefi")
        return cached_machine(labkit.machine_dir(variant), "pve machine (Secure Boot)",
                              lambda tmp: make_secureboot(tmp, image, uefi))
    return cached_machine(labkit.machine_dir(variant), "pve machine",
                          lambda tmp: install(tmp, image, legacy=variant == "legacy"))


def cached_machine(target: Path, what: str, make: Callable[[Path], str]) -> Path:
    """``target`` when a complete one is cached; else, under the cache lock, ``make(tmp)``
    fills a temp dir beside it and returns what to say in its ``complete`` file; its disks and
    NVRAM are made read-only (every run boots overlays and copies) and the dir is renamed into
    place. A make that fails or is interrupted leaves nothing."""
    if (target / "complete").exists():
        log(f"{what}: cached at {target}")
        labkit.mark_used(target)
        return target
    with labkit.cache_lock():
        if (target / "complete").exists():
            return target
        for stale in [*target.parent.glob("machine-*"), *target.parent.glob(".tmp-machine-*")]:
            if stale == target or (not stale.name.startswith(".tmp-")
                                   and labkit.unused_for(stale) < labkit.STALE_AFTER):
                continue  # another checkout's machine (or another variant), if in use
            log(f"{what}: removing stale {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-machine-", dir=target.parent))
        start = time.monotonic()
        log(f"{what}: making it in {tmp}")
        try:
            said = make(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for name in ("disk1.img", "disk2.img", "vars.fd"):
            if (tmp / name).exists():
                (tmp / name).chmod(0o444)
        (tmp / "complete").write_text(f"{said}; made in {time.monotonic() - start:.0f} s\n")
        tmp.chmod(0o755)
        tmp.rename(target)
        log(f"{what}: made in {time.monotonic() - start:.0f} s at {target}")
        return target


def install(tmp: Path, image: Path, legacy: bool) -> str:
    """The machine installed by lab/machine/install (about 20 minutes at 1 vCPU)."""
    old, new = ((image / "kernels" / f"{k}.kver").read_text().strip() for k in ("old", "new"))
    disks = []
    for n in (1, 2):
        path = tmp / f"disk{n}.img"
        labkit.mkdisk(path, DISK_MIB, ESP_MIB, ESP_VOLIDS[n - 1], f"ESP{n}",
                      rest=labkit.ZFS_GUID, bios_boot=True)
        disks.append(Disk(path, SERIALS[n - 1]))
    run = labkit.LabRun(command=["bash", "/src/lab/machine/install",
                                 "legacy" if legacy else "uefi"], disks=0, esps=0,
                        uefi=not legacy, extra_disks=disks,
                        extra_shares=[Share(image / "kernels", "kernels")],
                        timeout=2400, stream=True)
    rc = run.run()
    if rc != 0:
        raise SystemExit(f"pve machine: installation FAILED (status {rc})")
    if not legacy:
        shutil.copyfile(labkit.OVMF_VARS, tmp / "vars.fd")
    return f"installed; kernel {old}, pending update {new}"


def make_secureboot(tmp: Path, image: Path, uefi: Path) -> str:
    """The Secure Boot machine: a copy of the UEFI machine's disks with both ESPs formatted
    again, turned into a Proxmox Secure Boot ZFS install by lab/machine/install-secureboot
    (GRUB mode: shim + Debian's signed GRUB; zfs modules signed with a key made here), and
    OVMF variables with Microsoft's keys (Secure Boot on) plus that key's cert in MokList, as
    ``mokutil --import`` + MokManager would leave it (virt-fw-vars from the dev venv edits the
    variable store offline). The key is kept in the machine dir (keys/mok.key, keys/mok.der)."""
    keys = tmp / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "36500", "-subj", "/CN=beadm lab module signing key/",
                    "-outform", "DER", "-keyout", str(keys / "mok.key"),
                    "-out", str(keys / "mok.der")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    disks = []
    for n in (1, 2):
        path = tmp / f"disk{n}.img"
        subprocess.run(["cp", "--sparse=always", str(uefi / path.name), str(path)], check=True)
        path.chmod(0o644)
        labkit.format_esp(path, ESP_MIB, ESP_VOLIDS[n - 1], f"ESP{n}")
        disks.append(Disk(path, SERIALS[n - 1]))
    run = labkit.LabRun(command=["bash", "/src/lab/machine/install-secureboot"],
                        disks=0, esps=0, uefi=True, extra_disks=disks,
                        extra_shares=[Share(image / "kernels", "kernels"), Share(keys, "keys")],
                        timeout=1800, stream=True)
    rc = run.run()
    if rc != 0:
        raise SystemExit(f"pve machine (Secure Boot): installation FAILED (status {rc})")
    shutil.copyfile(labkit.OVMF_VARS_MS, tmp / "vars.fd")
    venv_python = subprocess.run([str(labkit.REPO / "tools" / "dev-venv")], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout.strip()
    subprocess.run([str(Path(venv_python).parent / "virt-fw-vars"), "--inplace",
                    str(tmp / "vars.fd"), "--add-mok", MOK_OWNER, str(keys / "mok.der")],
                   check=True)
    return f"made from {uefi.name}"


@dataclass
class PveRun:
    """One `lab/pvelab run` call: fresh overlays, then every step in its own boot."""

    steps: list[Path]
    timeout: float = 600
    keep: Path | None = None
    verbose: bool = False
    mem: int = 2048
    idle_boots: int = 1  # power-ons in a row that may end (qemu exits) with no step done
    variant: str = "uefi"  # labkit.VARIANTS
    consoles: list[Path] = field(default_factory=list)

    def say(self, line: str) -> None:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
        sys.stdout.flush()

    def echo_console(self, line: str) -> None:
        sys.stdout.write("  | " + line)
        sys.stdout.flush()

    def prepare(self, machine: Path, work: Path) -> Path:
        share = work / "share"
        for sub in ("steps", "state", "out", "bin", "requests"):
            (share / sub).mkdir(parents=True)
        for k, step in enumerate(self.steps, 1):
            shutil.copyfile(step, share / "steps" / f"{k}.sh")
        (share / "state" / "total").write_text(f"{len(self.steps)}\n")
        (share / "state" / "next-step").write_text("1\n")
        (share / "state" / "boots").write_text("0\n")
        mdir = labkit.LAB_DIR / "machine"
        shutil.copy2(mdir / "pvelab-agent", share / "agent")
        shutil.copy2(mdir / "beadm-wrapper", share / "bin" / "beadm")
        shutil.copy2(mdir / "pvelab-crash", share / "bin" / "pvelab-crash")
        for helper in ("pvelab-kernel-update", "pvelab-helper-upgrade"):
            shutil.copy2(mdir / helper, share / "bin" / helper)
        for name in ("pvelab-detach-disk", "pvelab-attach-disk"):
            shutil.copy2(mdir / "pvelab-disk", share / "bin" / name)
        for n in (1, 2):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(machine / f"disk{n}.img"), str(work / f"disk{n}.qcow2")],
                           check=True)
        if self.variant != "legacy":
            shutil.copyfile(machine / "vars.fd", work / "vars.fd")
            (work / "vars.fd").chmod(0o644)
        return share

    def run_once(self, machine: Path, attempt: int) -> int:
        work = Path(tempfile.mkdtemp(prefix="pvelab-", dir=labkit.work_root() / "runs"))
        self.say(f"PVELAB attempt={attempt} steps={len(self.steps)}")
        try:
            share = self.prepare(machine, work)
            with labkit.vm_slot():  # one slot for the whole call: boots follow each other
                return self.drive(work, share)
        finally:
            if self.keep is not None:
                self.keep.mkdir(parents=True, exist_ok=True)
                for item in work.iterdir():
                    dest = self.keep / item.name
                    if dest.exists():
                        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                    shutil.move(str(item), dest)
                self.say(f"PVELAB kept disks, NVRAM and share in {self.keep}")
            shutil.rmtree(work, ignore_errors=True)

    def drive(self, work: Path, share: Path) -> int:
        out = share / "out"
        total = len(self.steps)
        detached: set[int] = set()
        seen_reports: set[str] = set()
        log_offsets: dict[int, int] = {}
        last_progress = [time.monotonic()]
        finished_steps: set[int] = set()
        silent_power_ons = 0  # qemu started, the firmware never printed (a TCG reset hang)
        idle_power_ons = 0  # qemu exited on its own with no step done

        def poll() -> None:
            for report in sorted(out.glob("boot-*.report"),
                                 key=lambda p: int(p.stem.split("-")[1])):
                if report.name not in seen_reports:
                    seen_reports.add(report.name)
                    self.say(report.read_text().strip())
                    since = time.monotonic() - last_progress[0]
                    log(f"pvelab: {report.stem} reported {since:.0f} s after the previous boot "
                        "report or step end (or qemu start)")
                    last_progress[0] = time.monotonic()
            for k in range(1, total + 1):
                logf = out / f"step-{k}.log"
                if logf.exists():
                    data = logf.read_bytes()
                    off = log_offsets.get(k, 0)
                    if len(data) > off:
                        end = data.rfind(b"\n", off) + 1
                        rcf = out / f"step-{k}.rc"
                        if rcf.exists():
                            end = len(data)
                        if end > off:
                            for line in data[off:end].decode("utf-8", "replace").splitlines():
                                self.say(f"[step {k}] {line}")
                            log_offsets[k] = end
                if k not in finished_steps and (out / f"step-{k}.rc").exists():
                    finished_steps.add(k)
                    log(f"pvelab: step {k} ended after {time.monotonic() - last_progress[0]:.0f} s")
                    last_progress[0] = time.monotonic()

        while True:
            done_before = len(finished_steps)
            disks = [Disk(work / f"disk{n}.qcow2", SERIALS[n - 1], fmt="qcow2", bootindex=n)
                     for n in (1, 2) if n not in detached]
            console = labkit.new_log_path("pvelab")
            self.consoles.append(console)
            vm = labkit.VM(disks=disks, shares=[Share(share, "pvelab"), Share(labkit.REPO, "src")],
                           console_log=console, mem=self.mem,
                           vars_fd=None if self.variant == "legacy" else work / "vars.fd",
                           secure_boot=self.variant == "secureboot",
                           no_reboot=True)  # a guest reboot ends qemu: each boot is a power-on
            marker = GRUB_MARKER if self.variant == "legacy" else FIRMWARE_MARKER
            stop = threading.Event()

            def watch(vm: labkit.VM = vm, stop: threading.Event = stop) -> None:
                while not stop.wait(0.5):
                    poll()
                    if time.monotonic() - last_progress[0] > self.timeout:
                        vm.kill(f"no boot report or step result within {self.timeout:.0f} s")
                        return

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            last_progress[0] = time.monotonic()
            status, text = vm.run_unlocked(self.timeout * (total + 2),
                                           self.echo_console if self.verbose else None,
                                           ready_marker=marker,
                                           ready_timeout=FIRMWARE_SILENCE)
            stop.set()
            watcher.join()
            poll()
            if status is None and marker not in text and silent_power_ons < 3:
                # OVMF under TCG occasionally hangs before printing anything; power on again
                silent_power_ons += 1
                self.say(f"PVELAB firmware printed nothing in {FIRMWARE_SILENCE} s: power-on again")
                continue
            results = {k: (out / f"step-{k}.rc").read_text().strip() for k in finished_steps}
            failed = {k: r for k, r in results.items() if r not in ("0", "crash")}
            if failed:
                k, r = min(failed.items())
                self.say(f"PVELAB result=fail step={k} status={r} console={console}")
                return int(r) if r.isdigit() else 1
            if len(finished_steps) == total:
                self.say(f"PVELAB result=ok steps={total} boots={len(seen_reports)}")
                return 0
            progressed = len(finished_steps) > done_before
            if status is not None and not progressed and idle_power_ons < self.idle_boots:
                # a boot that failed before its step (e.g. panic=5, a failed trial boot): the
                # firmware gets another power-on, as a reset would have given it
                idle_power_ons += 1
                self.say("PVELAB qemu exited with no step done: power-on again")
                continue
            idle_power_ons = 0
            if status is None or not progressed:
                why = "killed: no progress" if status is None else f"qemu exited {status}"
                self.say(f"PVELAB result=no-result ({why}) after {len(seen_reports)} boots, "
                         f"{len(finished_steps)}/{total} steps; console={console}")
                log("pvelab: console tail:\n" + labkit.console_tail(text))
                return NO_RESULT
            requests = share / "requests" / "disks"
            if requests.exists():
                for line in requests.read_text().split("\n"):
                    words = line.split()
                    if len(words) == 2 and words[1].isdigit():
                        (detached.add if words[0] == "detach" else detached.discard)(int(words[1]))
                requests.unlink()
                self.say(f"PVELAB disks detached for the next power-on: {sorted(detached)}")

    def run(self) -> int:
        machine = build_machine(self.variant)
        return labkit.retry_on_no_result("pvelab",
                                         lambda attempt: self.run_once(machine, attempt))
