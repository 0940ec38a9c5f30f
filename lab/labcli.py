"""Command line of lab/lab (build, machine, run, test). See lab/README.md for the contracts."""

from __future__ import annotations

import argparse

import labkit

PYTEST_NO_TESTS = 5


def add_vm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disks", type=int, default=2, help="blank disks virtio-pool1..N (2)")
    p.add_argument("--disk-size", default="1G", help="size of each blank disk (1G)")
    p.add_argument("--esps", type=int, default=2, help="ESP disks virtio-esp1..M (2)")
    p.add_argument("--esp-size", default="512M", help="size of each ESP partition (512M)")
    p.add_argument("--mem", type=int, default=2048, help="guest memory in MiB (2048)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the whole VM (1800)")
    p.add_argument("--uefi", action="store_true", help="boot the VM's kernel through OVMF")
    p.add_argument("-v", "--verbose", action="store_true", help="stream the whole console")


def lab_run(args: argparse.Namespace, command: list[str]) -> int:
    return labkit.LabRun(
        command=command, disks=args.disks, disk_mib=labkit.parse_size_mib(args.disk_size),
        esps=args.esps, esp_mib=labkit.parse_size_mib(args.esp_size), mem=args.mem,
        timeout=args.timeout, uefi=args.uefi, verbose=args.verbose).run()


VALUED = {"--disks", "--disk-size", "--esps", "--esp-size", "--mem", "--timeout"}
FLAGS = {"--uefi", "-v", "--verbose", "--force", "-h", "--help"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``SUBCOMMAND [LAB OPTIONS] [--] REST...``: lab options end at the first argument
    that is not one of them (or at ``--``); everything after goes to the command / pytest."""
    head = argv[:1]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return head, argv[i + 1:]
        name = arg.split("=", 1)[0]
        if name in VALUED:
            head += argv[i:i + 1] if "=" in arg else argv[i:i + 2]
            i += 1 if "=" in arg else 2
        elif arg in FLAGS:
            head.append(arg)
            i += 1
        else:
            break
    return head, argv[i:]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lab/lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse the cached lab image")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    sub.add_parser("machine", help="build or reuse the installed Proxmox-like machine")
    r = sub.add_parser("run", help="run CMD as root in a fresh VM: lab run [OPTIONS] -- CMD...")
    add_vm_options(r)
    r.add_argument("command", nargs="*", help="-- CMD ARGS...")
    t = sub.add_parser("test", help="pytest inside a fresh VM: lab test [PYTEST ARGS]")
    add_vm_options(t)
    t.add_argument("pytest_args", nargs="*", help="arguments for pytest (default tests/lab)")
    head, rest = split_argv(argv)
    args = parser.parse_args(head)
    if args.cmd == "build":
        labkit.build_image(force=args.force)
        return 0
    if args.cmd == "machine":
        import pvemachine

        pvemachine.build_machine()
        return 0
    if args.cmd == "run":
        command = rest
        if not command:
            parser.error("lab run: no command (lab/lab run [OPTIONS] -- CMD ARGS...)")
        return lab_run(args, command)
    if args.cmd == "test":
        pytest_args = rest or ["tests/lab"]
        script = ('python3 -m pytest -p no:cacheprovider "$@"; rc=$?; '
                  f'if [ $rc -eq {PYTEST_NO_TESTS} ]; then '
                  'echo "lab test: pytest collected no tests: failing" >&2; exit 1; fi; '
                  'exit $rc')
        return lab_run(args, ["sh", "-c", script, "pytest", *pytest_args])
    return 2
