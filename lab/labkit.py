"""Shared host-side code of the beadm lab (used by lab/lab and lab/pvelab).

- the cache: ``${BEADM_LAB_CACHE:-/var/cache/beadm-lab}/<image hash>/`` holds the lab image
  (root.img, vmlinuz, initrd.img, kver, modules/, kernels/) and, next to it,
  ``machine-<machine hash>/`` holds the installed Proxmox-like machine (two disks + NVRAM);
- hashing of the recipe files, locking, building into a temp dir renamed into place;
- qemu invocation with a timeout, console log, and the "no result" exit status 125.

Python 3.11 standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
NO_RESULT = 125
TIMED_OUT = 124  # the command started in the VM and did not finish in time
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: OVMF built with SMM and Secure Boot, and variables with Microsoft's keys enrolled
# (Secure Boot on), as on a PC that boots Debian's shim
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")

# Files that define the image: changing one of them changes the hash and rebuilds it.
IMAGE_RECIPE = ("image/build-rootfs",)
# Files that define the installed Proxmox-like machine (on top of the image).
MACHINE_RECIPE = (
    "machine/install",
    "machine/pvelab-boot.service",
    "machine/pvelab-boot",
    "fixtures/proxmox-boot-tool",
    "fixtures/zz-proxmox-boot",
    "fixtures/proxmox-boot-sync",
    "fixtures/proxmox-boot-cleanup.service",
    "fixtures/proxmox-kernel-helper.postinst",
    "fixtures/build-standin",
    "fixtures/000_proxmox_boot_header",
)
# The Secure Boot machine is made from a copy of the UEFI one: its recipe adds this.
SECUREBOOT_RECIPE = ("machine/install-secureboot",)
#: The installed machines: "uefi" (OVMF + systemd-boot), "legacy" (SeaBIOS + GRUB i386-pc),
#: "secureboot" (OVMF with Secure Boot on + shim + Debian's signed GRUB).
VARIANTS = ("uefi", "legacy", "secureboot")
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
ZFS_GUID = "6A898CC3-1DD2-11B2-99A6-080020736631"
HEX = re.compile(r"^[0-9a-f]{16}$")


def log(msg: str) -> None:
    """Progress line with a timestamp, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("BEADM_LAB_CACHE", "/var/cache/beadm-lab"))


def recipe_hash(names: Sequence[str], salt: str = "") -> str:
    """sha256 over the named recipe files (relative to lab/), first 16 hex digits."""
    h = hashlib.sha256(salt.encode())
    for name in names:
        path = LAB_DIR / name.split(":")[0]
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image_hash() -> str:
    return recipe_hash(IMAGE_RECIPE)


def image_dir() -> Path:
    return cache_root() / image_hash()


def machine_dir(variant: str = "uefi") -> Path:
    """The installed machine of ``variant`` (VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"no machine variant {variant!r}")
    recipe = MACHINE_RECIPE + (SECUREBOOT_RECIPE if variant == "secureboot" else ())
    kind = "machine-" if variant == "uefi" else f"machine-{variant}-"
    return image_dir() / f"{kind}{recipe_hash(recipe, image_hash())}"


@contextlib.contextmanager
def cache_lock(root: Path | None = None) -> Iterator[None]:
    """Exclusive lock over cache builds (several engineers may build at once); ``root``:
    another cache than the lab's (the Debian 13 tree's)."""
    root = root if root is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def apt_mirrors() -> tuple[str, str]:
    """(debian mirror, security mirror) from the host's own apt configuration."""
    main = security = ""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith((" ", "#")):
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
            uri = fields.get("URIs", "").split()[0] if fields.get("URIs") else ""
            suites = fields.get("Suites", "")
            if not uri:
                continue
            if "-security" in suites:
                security = security or uri
            else:
                main = main or uri
    if not main:
        plain = Path("/etc/apt/sources.list")
        for line in plain.read_text().splitlines() if plain.exists() else []:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                if "-security" in parts[2]:
                    security = security or parts[1]
                else:
                    main = main or parts[1]
    if not main:
        raise SystemExit("lab: cannot find a Debian mirror in the host's apt configuration")
    if not security:
        raise SystemExit("lab: cannot find the security mirror in the host's apt configuration")
    return main, security


#: A cached image or machine of another recipe is removed only when unused this long: several
#: checkouts (worktrees, a CI clone) with different recipes may use the cache at once, and
#: removing one in use breaks their runs (a VM's backing disk gone).
STALE_AFTER = 2 * 86400
USED_MARK = "last-used"


def mark_used(entry: Path) -> None:
    """Record that ``entry`` (an image or machine dir) is in use now."""
    with contextlib.suppress(OSError):
        (entry / USED_MARK).touch()


def unused_for(entry: Path) -> float:
    """Seconds since ``entry`` was last used (built, or found cached)."""
    for mark in (entry / USED_MARK, entry / "complete", entry):
        with contextlib.suppress(OSError):
            return time.time() - mark.stat().st_mtime
    return float("inf")


def remove_stale(keep: Path) -> None:
    """Remove other <hash> dirs (and leftover temp dirs) unused for STALE_AFTER seconds."""
    root = cache_root()
    for entry in root.iterdir():
        if entry == keep:
            continue
        if entry.name.startswith(".tmp-") or (HEX.match(entry.name)
                                              and unused_for(entry) >= STALE_AFTER):
            # a .tmp- dir is a killed build's (builds hold the cache lock, as the caller
            # does); another checkout's image is kept while it is in use
            log(f"removing stale cache entry {entry}")
            shutil.rmtree(entry, ignore_errors=True)


def build_image(force: bool = False) -> Path:
    """Build the lab image into the cache unless a complete one exists; return its dir."""
    target = image_dir()
    if (target / "complete").exists() and not force:
        log(f"lab image: cached at {target}")
        mark_used(target)
        return target
    with cache_lock():
        if (target / "complete").exists() and not force:
            log(f"lab image: cached at {target} (built meanwhile)")
            return target
        remove_stale(target)
        shutil.rmtree(target, ignore_errors=True)
        mirror, security = apt_mirrors()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=cache_root()))
        log(f"lab image: building {target.name} in {tmp} (takes about 7 minutes)")
        start = time.monotonic()
        env = dict(os.environ, MIRROR=mirror, SECURITY_MIRROR=security,
                   APT_CACHE=str(cache_root() / "apt"))
        try:
            subprocess.run([str(LAB_DIR / "image" / "build-rootfs"), str(tmp)], env=env, check=True)
        except (subprocess.CalledProcessError, KeyboardInterrupt):
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit("lab image: build FAILED") from None
        (tmp / "complete").write_text(f"built in {time.monotonic() - start:.0f} s\n")
        tmp.chmod(0o755)
        tmp.rename(target)
        log(f"lab image: built in {time.monotonic() - start:.0f} s at {target}")
        return target


# ----------------------------------------------------------------------------------------------
# disks


def mkdisk(path: Path, size_mib: int, esp_mib: int, volid: str, label: str,
           rest: str = "", bios_boot: bool = False) -> None:
    """A sparse raw GPT disk with a FAT32 ESP (volume id ``volid``, e.g. ``1111-AAAA``) starting
    at 1 MiB. ``bios_boot``: a BIOS boot partition (sectors 34-2047) comes first, as the Proxmox
    installer lays it out, so the ESP is partition 2. ``rest``: a GPT type GUID for one more
    partition filling the disk. Nothing is mounted."""
    path.unlink(missing_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size_mib << 20)
    table = "label: gpt\n"
    if bios_boot:
        table += f"first-lba: 34\nstart=34, size=2014, type={BIOS_BOOT_GUID}\n"
    table += f"start=2048, size={esp_mib}MiB, type={ESP_GUID}\n"
    if rest:
        table += f"type={rest}\n"
    subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True,
                   stdout=subprocess.DEVNULL)
    format_esp(path, esp_mib, volid, label)


def format_esp(path: Path, esp_mib: int, volid: str, label: str) -> None:
    """A new, empty FAT32 file system in the ESP of a disk made by mkdisk (it starts at 1 MiB)."""
    sectors = esp_mib * 2048
    subprocess.run(["mkfs.vfat", "-F", "32", "-s", "1", "-S", "512", "--offset", "2048",
                    "-h", "2048", "-i", volid.replace("-", ""), "-n", label, str(path),
                    str(sectors // 2)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def parse_size_mib(text: str) -> int:
    """'1G', '512M', '2048' (MiB) -> MiB."""
    m = re.fullmatch(r"(\d+)([MmGg]?)(i?[Bb])?", text.strip())
    if not m:
        raise ValueError(f"bad size {text!r} (use e.g. 512M or 2G)")
    n = int(m.group(1))
    return n * 1024 if m.group(2).lower() == "g" else n


def esp_volid(n: int) -> str:
    """Volume id of ESP number n (1-based): 1111-AAAA, 2222-BBBB, ..."""
    return f"{str(n % 10) * 4}-{chr(ord('A') + n - 1) * 4}"


# ----------------------------------------------------------------------------------------------
# qemu


@dataclass
class Disk:
    path: Path
    serial: str
    fmt: str = "raw"
    snapshot: bool = False
    bootindex: int | None = None


@dataclass
class Share:
    path: Path
    tag: str


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlopen after fork
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the lab process that started it dies (a killed
    ``lab``/``pvelab`` must not leave a qemu running until its own timeout). Popen is called
    from the main thread, whose exit is what the kernel watches."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def max_vms() -> int:
    """How many lab VMs may run at once: ``BEADM_LAB_MAX_VMS``, default the number of CPUs."""
    return max(1, int(os.environ.get("BEADM_LAB_MAX_VMS", "0") or 0) or (os.cpu_count() or 1))


def vcpus() -> int:
    """vCPUs per lab VM: ``BEADM_LAB_SMP``, default the CPUs shared out over the VM slots.
    Under TCG every vCPU is a host thread; a guest with more vCPUs than its share of the host
    stalls (RCU stalls, spinning on preempted vCPUs) and gets slower, not faster."""
    env = int(os.environ.get("BEADM_LAB_SMP", "0") or 0)
    return max(1, env or (os.cpu_count() or 1) // max_vms())


@dataclass
class VM:
    """One qemu TCG run. ``kernel`` set: direct kernel boot; ``vars_fd`` set: OVMF."""

    disks: list[Disk]
    shares: list[Share]
    console_log: Path
    mem: int = 2048
    smp: int = field(default_factory=vcpus)
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    vars_fd: Path | None = None
    secure_boot: bool = False  # OVMF's Secure Boot build (needs SMM); vars_fd must be set
    no_reboot: bool = True
    extra: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _kill_reason: str = field(default="", init=False, repr=False)

    def kill(self, reason: str) -> None:
        """Make a running ``run`` kill qemu (from another thread); it then returns None."""
        self._kill_reason = reason

    def argv(self) -> list[str]:
        argv = ["qemu-system-x86_64", "-machine", "q35,smm=on" if self.secure_boot else "q35",
                "-accel", "tcg,thread=multi",
                "-cpu", "max", "-smp", str(self.smp), "-m", str(self.mem), "-nodefaults",
                "-display", "none", "-serial", "stdio", "-device", "virtio-rng-pci"]
        if self.no_reboot:
            argv.append("-no-reboot")
        if self.vars_fd is not None:
            code = OVMF_CODE_SECBOOT if self.secure_boot else OVMF_CODE
            if self.secure_boot:  # only SMM code may write the variables
                argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_fd}"]
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel), "-append", self.append]
            if self.initrd is not None:
                argv += ["-initrd", str(self.initrd)]
        for i, d in enumerate(self.disks):
            opts = f"file={d.path},format={d.fmt},if=none,id=d{i},cache=unsafe,aio=threads"
            if d.snapshot:
                opts += ",snapshot=on"
            dev = f"virtio-blk-pci,drive=d{i},serial={d.serial}"
            if d.bootindex is not None:
                dev += f",bootindex={d.bootindex}"
            argv += ["-drive", opts, "-device", dev]
        for s in self.shares:
            argv += ["-virtfs",
                     f"local,path={s.path},mount_tag={s.tag},security_model=none,id={s.tag}"]
        return argv + self.extra

    def run(self, timeout: float, on_line: Callable[[str], None] | None = None,
            ready_marker: str | None = None, ready_timeout: float | None = None,
            ) -> tuple[int | None, str]:
        """``run_unlocked`` inside a VM slot (see ``vm_slot``)."""
        with vm_slot():
            return self.run_unlocked(timeout, on_line, ready_marker, ready_timeout)

    def run_unlocked(self, timeout: float, on_line: Callable[[str], None] | None = None,
            ready_marker: str | None = None, ready_timeout: float | None = None,
            ) -> tuple[int | None, str]:
        """Run qemu to its end; every console line goes to the log and to ``on_line``.
        qemu is killed after ``timeout`` seconds, or after ``ready_timeout`` seconds when
        ``ready_marker`` has not appeared on the console by then (a hung boot).
        Returns (qemu exit status, or None when it was killed; the console text)."""
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        chunks: list[str] = []
        ready = threading.Event()
        done = threading.Event()
        killed: list[str] = []
        with self.console_log.open("w", encoding="utf-8", errors="replace") as logf:
            logf.write("LAB: " + " ".join(self.argv()) + "\n")
            proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self._proc = proc

            def watchdog() -> None:
                start = time.monotonic()
                while not done.wait(0.5):
                    elapsed = time.monotonic() - start
                    if elapsed > timeout:
                        killed.append(f"the {timeout:.0f} s timeout")
                    elif (ready_marker and ready_timeout and not ready.is_set()
                          and elapsed > ready_timeout):
                        killed.append(f"no {ready_marker!r} within {ready_timeout:.0f} s")
                    if self._kill_reason and not killed:
                        killed.append(self._kill_reason)
                    if killed:
                        proc.kill()
                        return

            dog = threading.Thread(target=watchdog, daemon=True)
            dog.start()
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace").replace("\r", "")
                    logf.write(line)
                    logf.flush()
                    chunks.append(line)
                    if ready_marker and ready_marker in line:
                        ready.set()
                    if on_line is not None:
                        on_line(line)
                proc.wait()
            finally:
                done.set()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                dog.join()
            if killed:
                logf.write(f"\nLAB: qemu killed: {killed[0]}\n")
                log(f"qemu killed: {killed[0]}")
        return (None if killed else proc.returncode), "".join(chunks)


@contextlib.contextmanager
def vm_slot() -> Iterator[None]:
    """At most ``BEADM_LAB_MAX_VMS`` (default: the number of CPUs) lab VMs run at once on this
    host; more only thrash under TCG and run into their timeouts. Waits for a free slot."""
    slots = max_vms()
    sdir = cache_root() / "vm-slots"
    sdir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for i in range(slots):
            fh = (sdir / f"slot-{i}").open("w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            try:
                if waited:
                    log(f"got VM slot {i}")
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if not waited:
            log(f"waiting for one of the {slots} VM slots (other lab VMs are running)")
            waited = True
        time.sleep(2)


def busybox_path() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(cand)
        if path.exists() and "statically linked" in subprocess.run(
                ["file", "-b", str(path)], capture_output=True, text=True).stdout:
            return path
    return Path("/bin/busybox")


def build_stage0(image: Path, dest: Path) -> Path:
    """The busybox stage-0 initramfs (cpio.gz) for lab runs: it loads the image's virtio/ext4
    modules, mounts the root image and starts lab/vm/lab-init (copied into it) as PID 1."""
    work = Path(tempfile.mkdtemp(prefix="stage0-", dir=dest.parent))
    try:
        for sub in ("bin", "proc", "sys", "dev", "newroot", "mods"):
            (work / sub).mkdir()
        shutil.copy2(busybox_path(), work / "bin" / "busybox")
        for ko in sorted((image / "modules").iterdir()):
            shutil.copy2(ko, work / "mods" / ko.name)
        shutil.copy2(LAB_DIR / "vm" / "stage0-init", work / "init")
        shutil.copy2(LAB_DIR / "vm" / "lab-init", work / "lab-init")
        (work / "init").chmod(0o755)
        (work / "lab-init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=work, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=work, input=files,
                              capture_output=True, check=True).stdout
        dest.write_bytes(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True,
                                        check=True).stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def console_tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def work_root() -> Path:
    """Per-run scratch space (disks, shares) and kept console logs, outside the checkout."""
    root = Path(os.environ.get("BEADM_LAB_WORK", "/var/tmp/beadm-lab"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    return root


def new_log_path(kind: str) -> Path:
    """A fresh console log path under <work>/logs (the last 300 logs are kept)."""
    logs = work_root() / "logs"
    old = sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-300]:
        stale.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return logs / f"{kind}-{stamp}-{os.getpid()}-{time.monotonic_ns() % 100000:05d}.log"


@dataclass
class LabRun:
    """One `lab run` VM: fresh blank disks, the checkout at /src, CMD as root, its status back."""

    command: list[str]
    disks: int = 2
    disk_mib: int = 1024
    esps: int = 2
    esp_mib: int = 512
    mem: int = 2048
    timeout: float = 1800
    boot_timeout: float = 240
    uefi: bool = False
    extra_disks: list[Disk] = field(default_factory=list)
    extra_shares: list[Share] = field(default_factory=list)  # CMD mounts them (9p tag)
    stream: bool = True
    verbose: bool = False

    def run_once(self, image: Path, attempt: int) -> int:
        work = Path(tempfile.mkdtemp(prefix="run-", dir=work_root() / "runs"))
        console = new_log_path("lab-run" if attempt == 1 else "lab-run-retry")
        try:
            ctl = work / "ctl"
            (ctl / "out").mkdir(parents=True)
            (ctl / "cmd").write_text(" ".join(shlex.quote(a) for a in self.command) + "\n")
            disks = [Disk(image / "root.img", "lab-root", snapshot=True)]
            for n in range(1, self.esps + 1):
                path = work / f"esp{n}.img"
                mkdisk(path, self.esp_mib + 2, self.esp_mib, esp_volid(n), f"ESP{n}")
                disks.append(Disk(path, f"esp{n}"))
            for n in range(1, self.disks + 1):
                path = work / f"pool{n}.img"
                with path.open("wb") as fh:
                    fh.truncate(self.disk_mib << 20)
                disks.append(Disk(path, f"pool{n}"))
            disks += self.extra_disks
            vm = VM(disks=disks,
                    shares=[Share(ctl, "lab"), Share(REPO, "src"), *self.extra_shares],
                    console_log=console, mem=self.mem, kernel=image / "vmlinuz",
                    initrd=build_stage0(image, work / "stage0.cpio.gz"),
                    append="console=ttyS0 root=/dev/vda rw quiet loglevel=3 panic=5 "
                           "init=/init")
            if self.uefi:
                vm.vars_fd = work / "vars.fd"
                shutil.copyfile(OVMF_VARS, vm.vars_fd)
            in_cmd = [False]

            def show(line: str) -> None:
                if line.startswith("LAB-CMD-START"):
                    in_cmd[0] = True
                    return
                if line.startswith("LAB-RC="):
                    in_cmd[0] = False
                    return
                if self.verbose or (self.stream and in_cmd[0]):
                    sys.stdout.write(line)
                    sys.stdout.flush()

            status, text = vm.run(self.timeout, show, "LAB-CMD-START", self.boot_timeout)
            rc_file = ctl / "out" / "rc"
            if rc_file.exists():
                rc = int(rc_file.read_text().strip())
            else:
                found = re.findall(r"^LAB-RC=(\d+)", text, re.M)
                rc = int(found[-1]) if found else NO_RESULT
            if rc == NO_RESULT and "LAB-CMD-START" in text:
                # the command ran and did not finish: a hang in it, not a VM that failed to
                # come up; a second run would hang the same way (and hold a VM slot as long)
                log(f"lab run: the command did not finish within {self.timeout:.0f} s "
                    f"(qemu status {status}); not retried; console log: "
                    f"{console}\n{console_tail(text)}")
                rc = TIMED_OUT
            elif rc == NO_RESULT:
                log(f"lab run: the VM gave no result (qemu status {status}); console log: "
                    f"{console}\n{console_tail(text)}")
            elif rc != 0:
                log(f"lab run: command exited {rc}; console log: {console}")
            return rc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(self) -> int:
        image = build_image()
        return retry_on_no_result("lab run", lambda attempt: self.run_once(image, attempt))


def retry_on_no_result(what: str, attempt: Callable[[int], int]) -> int:
    """Run ``attempt(1)``; when the VM gave no result (125), and only then, ``attempt(2)``."""
    rc = attempt(1)
    if rc == NO_RESULT:
        log(f"{what}: no result from the VM (status 125): retrying once from scratch")
        rc = attempt(2)
    return rc
