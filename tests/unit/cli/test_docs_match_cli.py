"""The man page and the bash completion document exactly what the CLI parses.

Walks the argparse parser of ``beadm.cli`` (every subcommand, alias and option)
and checks it against ``man/beadm.8`` and ``completion/beadm``; checks the exit
codes of ``beadm.errors`` against the man page's EXIT STATUS section. Adding a
flag, a subcommand or an error class without documenting it fails here, and so
does documenting one the code does not have.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beadm import cli, errors
from worlds import REPO

ROOT = REPO
MAN = ROOT / "man" / "beadm.8"
COMPLETION = ROOT / "completion" / "beadm"


# --- the CLI, as argparse sees it ------------------------------------------


@dataclass
class Command:
    name: str
    aliases: set[str] = field(default_factory=set)
    options: set[str] = field(default_factory=set)  # every option string, e.g. {"-H", "--json"}


def _parser() -> argparse.ArgumentParser:
    for attr in ("build_parser", "make_parser", "_build_parser", "parser"):
        obj = getattr(cli, attr, None)
        if isinstance(obj, argparse.ArgumentParser):
            return obj
        if callable(obj):
            made = obj()
            if isinstance(made, argparse.ArgumentParser):
                return made
    raise AssertionError("beadm.cli exposes no build_parser() returning an ArgumentParser")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) == 1, "beadm's parser should have exactly one set of subcommands"
    return found[0]


def _commands() -> tuple[set[str], dict[str, Command]]:
    """Global options, and each subcommand (keyed by its main name) with its options."""
    parser = _parser()
    sub = _subparsers(parser)
    # add_parser() enters a command's own name first, then its aliases.
    by_parser: dict[int, Command] = {}
    for name, p in sub.choices.items():
        cmd = by_parser.get(id(p))
        if cmd is None:
            by_parser[id(p)] = Command(name=name, options=_options(p))
        else:
            cmd.aliases.add(name)
    return _options(parser), {c.name: c for c in by_parser.values()}


# --- the man page ------------------------------------------------------------


def _plain(roff: str) -> str:
    """Roff source to plain words: drop font escapes, unescape hyphens."""
    text = re.sub(r"\\f[BIRP]|\\f\(..|\\&|\\%", "", roff)
    text = text.replace("\\(aq", "'").replace("\\(dq", '"')
    return text.replace("\\-", "-").replace("\\(em", "-").replace("\\e", "\\")


def _man() -> str:
    return MAN.read_text(encoding="utf-8")


def _sections(roff: str) -> dict[str, str]:
    """Section name -> its roff source (up to the next .SH)."""
    parts = re.split(r"^\.SH\s+(.*)$", roff, flags=re.MULTILINE)
    return {parts[i].strip().strip('"'): parts[i + 1] for i in range(1, len(parts), 2)}


def _command_entries(commands_section: str) -> dict[str, str]:
    """COMMANDS section -> {command name: roff of its entry}.

    An entry starts at a ``.TP`` whose tag line is ``.B <command> ...`` (not an
    option) and runs to the next such tag.
    """
    lines = commands_section.splitlines()
    entries: dict[str, list[str]] = {}
    current: str | None = None
    for i, line in enumerate(lines):
        head = re.match(r"^\.B\s+([a-z][a-z0-9-]*)\b", line.replace("\\-", "-"))
        if head and i > 0 and lines[i - 1].strip() == ".TP":
            current = head.group(1).replace("\\-", "-")
            entries.setdefault(current, [])
        if current is not None:
            entries[current].append(line)
    return {k: "\n".join(v) for k, v in entries.items()}


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _documented_options(entry_roff: str) -> set[str]:
    """Options an entry documents as items: tag lines ``.B -x`` / ``.BI -x arg`` / ``.BR``."""
    found: set[str] = set()
    lines = entry_roff.splitlines()
    for i, line in enumerate(lines):
        if i > 0 and lines[i - 1].strip() == ".TP" and re.match(r"^\.B[IR]?\s", line):
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", _plain(line)))
    return found


# --- tests ---------------------------------------------------------------------


def test_man_page_has_the_required_sections() -> None:
    sections = _sections(_man())
    for name in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "GLOBAL OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert name in sections, f"man/beadm.8 lacks section {name}"


def test_every_subcommand_has_a_man_entry_and_a_synopsis_line() -> None:
    _, commands = _commands()
    sections = _sections(_man())
    entries = _command_entries(sections["COMMANDS"])
    synopsis = _plain(sections["SYNOPSIS"])
    for name, cmd in commands.items():
        assert name in entries, f"subcommand {name!r} has no entry in COMMANDS of man/beadm.8"
        assert _mentions(synopsis, name), f"subcommand {name!r} is not in the SYNOPSIS"
        for alias in cmd.aliases:
            assert _mentions(_plain(entries[name]), alias), (
                f"alias {alias!r} of {name!r} is not mentioned in its man entry"
            )


def test_man_page_documents_no_subcommand_the_cli_lacks() -> None:
    _, commands = _commands()
    entries = _command_entries(_sections(_man())["COMMANDS"])
    extra = set(entries) - set(commands)
    assert not extra, f"man/beadm.8 documents subcommands the CLI does not have: {sorted(extra)}"


def test_every_option_of_every_subcommand_is_in_its_man_entry() -> None:
    """The global options, which every command also takes after it, are in GLOBAL OPTIONS
    (test_every_global_option_is_in_global_options); each command's own in its entry."""
    global_opts, commands = _commands()
    entries = _command_entries(_sections(_man())["COMMANDS"])
    for name, cmd in commands.items():
        assert name in entries, f"subcommand {name!r} has no entry in COMMANDS of man/beadm.8"
        text = _plain(entries[name])
        for opt in sorted(cmd.options - {"-h", "--help"} - global_opts):
            assert _mentions(text, opt), f"option {opt} of 'beadm {name}' is not in its man entry"


def test_man_page_documents_no_option_the_cli_lacks() -> None:
    global_opts, commands = _commands()
    sections = _sections(_man())
    entries = _command_entries(sections["COMMANDS"])
    for name, entry in entries.items():
        if name not in commands:
            continue  # reported by test_man_page_documents_no_subcommand_the_cli_lacks
        extra = _documented_options(entry) - commands[name].options
        assert not extra, f"man entry of 'beadm {name}' documents options it lacks: {extra}"
    extra = _documented_options(sections["GLOBAL OPTIONS"]) - global_opts
    assert not extra, f"GLOBAL OPTIONS documents options beadm lacks: {extra}"


def test_every_global_option_is_in_global_options() -> None:
    global_opts, _ = _commands()
    text = _plain(_sections(_man())["GLOBAL OPTIONS"])
    for opt in sorted(global_opts):
        assert _mentions(text, opt), f"global option {opt} is not in GLOBAL OPTIONS"


def _exit_codes() -> set[int]:
    """Every status beadm can exit with: each error class's code, and each integer
    literal that ``beadm.cli`` returns (0, 1 for check's drift and OS errors, 130, ...)."""
    codes = {0}
    for _, obj in inspect.getmembers(errors, inspect.isclass):
        if issubclass(obj, errors.BeadmError):
            codes.add(int(obj.exit_code))
    where = Path(inspect.getfile(cli))  # the package (cli/__init__.py): every module of it
    for source in sorted(where.parent.glob("*.py")) if where.name == "__init__.py" else [where]:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Return)
                and isinstance(node.value, ast.Constant)
                and type(node.value.value) is int
            ):
                codes.add(node.value.value)
    return codes


def _documented_exit_codes() -> set[int]:
    section = _sections(_man())["EXIT STATUS"]
    lines = section.splitlines()
    return {
        int(m.group(1))
        for i, line in enumerate(lines)
        if i > 0 and lines[i - 1].strip() == ".TP" and (m := re.match(r"^\.B\s+(\d+)\s*$", line))
    }


def test_exit_status_lists_every_exit_code_and_no_other() -> None:
    code, documented = _exit_codes(), _documented_exit_codes()
    assert code - documented == set(), f"exit codes not in EXIT STATUS: {sorted(code - documented)}"
    assert documented - code == set(), (
        f"EXIT STATUS lists codes beadm does not exit with: {sorted(documented - code)}"
    )


def test_completion_knows_every_subcommand_and_option() -> None:
    script = COMPLETION.read_text(encoding="utf-8")
    global_opts, commands = _commands()
    for opt in sorted(global_opts):
        assert _mentions(script, opt), f"completion/beadm lacks global option {opt}"
    for name, cmd in commands.items():
        for word in {name, *cmd.aliases}:
            assert _mentions(script, word), f"completion/beadm lacks subcommand {word}"
        # the options of a subcommand are listed on its case branch: `name) opts="..."`
        branch = re.search(
            rf"^\s*(?:[\w|-]*\|)?{re.escape(name)}(?:\|[\w|-]*)?\)\s*opts=\"([^\"]*)\"",
            script,
            flags=re.MULTILINE,
        )
        assert branch, f"completion/beadm has no opts=... branch for {name}"
        listed = set(branch.group(1).split())
        # the global options are offered after every command (completion's $after_opts)
        missing = cmd.options - listed - global_opts
        assert not missing, f"completion/beadm lacks options {sorted(missing)} of {name}"
        extra = listed - cmd.options
        assert not extra, f"completion/beadm offers options {sorted(extra)} that {name} lacks"


def test_man_page_renders_without_warnings() -> None:
    """groff, when present, renders the page without a warning."""
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(
        [groff, "-ww", "-man", "-z", str(MAN)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


# --- the SYNOPSIS, ENVIRONMENT, FILES and EXAMPLES -----------------------------


def _synopsis_blocks() -> dict[str, str]:
    """SYNOPSIS -> {command name, or "" for the global line: the plain text of its block}.

    A block runs from ``.SY beadm`` to ``.YS``; its command is the first word after
    ``beadm`` when that is not an option or a placeholder (the global line's ``command``
    is an ``.I`` placeholder). A command with two blocks (``create``) gets both joined.
    """
    blocks: dict[str, str] = {}
    roff = _sections(_man())["SYNOPSIS"]
    for body in re.findall(r"^\.SY beadm\n(.*?)^\.YS", roff, flags=re.MULTILINE | re.DOTALL):
        first = body.splitlines()[0]
        head = re.match(r"^\.BR?\s+([a-z][a-z0-9\\-]*)", first)
        name = head.group(1).replace("\\-", "-") if head else ""
        blocks[name] = blocks.get(name, "") + "\n" + _plain(body)
    return blocks


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each option with fixed choices -> the choices (``--backend``, ``list -k``, ...)."""
    return {
        a.option_strings[0]: [str(c) for c in a.choices]
        for a in parser._actions
        if a.option_strings and a.choices is not None
    }


def test_synopsis_lists_every_option_and_every_choice_of_each_command() -> None:
    parser = _parser()
    blocks = _synopsis_blocks()
    parsers: dict[str, argparse.ArgumentParser] = {"": parser}
    for name, sub in _subparsers(parser).choices.items():
        parsers.setdefault(name, sub)
    global_opts, commands = _commands()
    for name, p in parsers.items():
        if name and name not in commands:
            continue  # an alias: its command's block
        where = f"'beadm {name}'" if name else "the global line"
        assert name in blocks, f"the SYNOPSIS has no block for {where}"
        text = blocks[name]
        for action in p._actions:
            strings = [s for s in action.option_strings if s not in ("-h", "--help")]
            if name and set(strings) & global_opts:
                continue  # a global option, also taken after the command: the global line
            if strings:
                assert any(_mentions(text, s) for s in strings), (
                    f"the SYNOPSIS of {where} lacks {'/'.join(strings)}"
                )
        for opt, choices in _choices(p).items():
            if name and opt in global_opts:
                continue
            for choice in choices:
                assert _mentions(text, choice), (
                    f"the SYNOPSIS of {where} lacks {choice!r} of {opt}"
                )


def test_every_choice_of_an_option_is_in_its_man_entry() -> None:
    parser = _parser()
    sections = _sections(_man())
    entries = _command_entries(sections["COMMANDS"])
    _, commands = _commands()
    for opt, choices in _choices(parser).items():
        for choice in choices:
            assert _mentions(_plain(sections["GLOBAL OPTIONS"]), choice), (
                f"GLOBAL OPTIONS lacks {choice!r} of {opt}"
            )
    global_opts, _ = _commands()
    for name, sub in _subparsers(parser).choices.items():
        if name not in commands:
            continue
        for opt, choices in _choices(sub).items():
            if opt in global_opts:
                continue  # a global option, also taken after the command: GLOBAL OPTIONS
            for choice in choices:
                assert _mentions(_plain(entries[name]), choice), (
                    f"the man entry of 'beadm {name}' lacks {choice!r} of {opt}"
                )


def _environment_reads() -> set[str]:
    """Every environment variable the code reads by name: ``environ[X]``,
    ``environ.get(X)``, ``getenv(X)``, X a string or a module-level string constant."""
    src = Path(inspect.getfile(errors)).parent
    names: set[str] = set()
    for source in sorted(src.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        consts = {
            t.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            key: ast.expr | None = None
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                (node.func.attr == "get" and _is_environ(node.func.value))
                or node.func.attr == "getenv"
            ) and node.args:
                key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
            elif isinstance(key, ast.Name):
                names.add(consts.get(key.id, _imported_constant(key.id)))
    return names


def _is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute | ast.Name) and (
        getattr(node, "attr", None) == "environ" or getattr(node, "id", None) == "environ"
    )


def _imported_constant(name: str) -> str:
    from beadm import runner

    value = getattr(runner, name, None)
    assert isinstance(value, str), f"environment key {name} is not a known string constant"
    return value


def test_environment_section_names_every_variable_beadm_reads() -> None:
    sections = _sections(_man())
    assert "ENVIRONMENT" in sections, "man/beadm.8 lacks section ENVIRONMENT"
    text = _plain(sections["ENVIRONMENT"])
    read = _environment_reads()
    assert read, "found no environment variable read in src/beadm: the scan is broken"
    for name in sorted(read):
        assert _mentions(text, name), f"ENVIRONMENT does not name {name}, which beadm reads"


def test_man_page_names_no_path_under_slash_lib() -> None:
    """Debian 13 has no /lib (merged /usr): the package's files are under /usr/lib."""
    text = _plain(_man())
    bare = [m.group(0) for m in re.finditer(r"(?<![\w/.])/lib/[\w./-]*", text)]
    assert not bare, f"man/beadm.8 names /lib paths (merged /usr: /usr/lib): {bare}"
    assert not re.search(r"(?<![\w/.])/lib\b", text), "man/beadm.8 names /lib"


def _example_commands(text: str) -> list[str]:
    """Each beadm command line of the examples: a line (after an optional ``$ `` or
    ``# `` prompt) that starts with ``beadm ``, cut at ``&&``, ``;``, ``|`` and ``#``."""
    found = []
    for line in text.splitlines():
        line = re.sub(r"^\s*[$#]\s+", "", line.strip())
        for part in re.split(r"&&|;|\||\s#\s", line):
            part = part.strip()
            if part.startswith("beadm ") and "$(" not in part:
                found.append(part)
            elif m := re.search(r"\$\((beadm [^)]*)\)", part):
                found.append(m.group(1))
    return found


def _parses(line: str) -> str | None:
    """None if beadm's parser accepts the command line, else its error."""
    import shlex

    from beadm.errors import UsageError

    words = shlex.split(line)[1:]
    try:
        cli._parse(words)
    except UsageError as e:
        return str(e)
    except SystemExit as e:  # --help
        return None if e.code == 0 else f"exit {e.code}"
    return None


def test_every_example_in_the_man_page_parses() -> None:
    examples = _plain(_sections(_man())["EXAMPLES"])
    lines = _example_commands(examples)
    assert len(lines) >= 5, f"EXAMPLES has too few beadm commands: {lines}"
    bad = {line: err for line in lines if (err := _parses(line)) is not None}
    assert not bad, f"EXAMPLES of man/beadm.8 has command lines beadm refuses: {bad}"


def test_see_also_names_the_pages_the_page_refers_to() -> None:
    """Every page the man page names as ``.BR page (N)`` elsewhere is in SEE ALSO, and
    the boot, apt and ZFS references an admin needs are there."""
    sections = _sections(_man())
    see_also = _plain(sections["SEE ALSO"])
    listed = set(re.findall(r"^\.BR\s+(\S+)\s+\((\d)\)", see_also, flags=re.MULTILINE))
    body = "\n".join(v for k, v in sections.items() if k not in ("SEE ALSO", "NAME"))
    named = set(re.findall(r"^\.BR\s+(\S+)\s+\((\d)\)", _plain(body), flags=re.MULTILINE))
    named.discard(("beadm", "8"))
    assert named <= listed, f"pages named in the text but not in SEE ALSO: {named - listed}"
    for page in ("systemd-boot(7)", "loader.conf(5)", "apt.conf(5)", "zfsprops(7)",
                 "zpoolprops(7)", "systemd.generator(7)", "grub-editenv(1)"):
        name, sect = page[:-3], page[-2]
        assert (name, sect) in listed, f"SEE ALSO lacks {page}"
