"""The README and docs/, run as a newcomer runs them: in a fresh copy of the
repository (the files git tracks, nothing else), the demo, then every
``python report.py`` command of the README and docs/*.md exactly as written, and
every program's ``--help``. A command may find nothing in its window (the docs'
dates are examples), but it then says so in one line; no command may print a
traceback."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import PROJECT, clean_env

pytestmark = pytest.mark.e2e
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
README = (PROJECT / "README.md").read_text(encoding="utf-8")


def readme_commands(program: str) -> list[str]:
    """The shell lines of the README and docs/ that run ``program`` (continuations
    joined, comments cut), page by page."""
    return [command for page in PAGES
            for command in shell_commands(page.read_text(encoding="utf-8"), program)]


def shell_commands(text: str, program: str) -> list[str]:
    """The lines of ``text``'s ```sh blocks that run ``program``."""
    commands, shell, block = [], False, []
    for line in text.splitlines():
        if line.startswith("```"):
            if shell:  # the end of a shell block: its lines, continuations joined
                for command in "\n".join(block).replace("\\\n", " ").splitlines():
                    command = command.split(" #", 1)[0].strip()
                    if command.startswith(f"python {program}"):
                        commands.append(command)
            shell, block = line.strip() == "```sh", []
        elif shell:
            block.append(line)
    return commands


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files in a new folder, as `git clone` would give them, with the demo
    run once in it."""
    where = tmp_path_factory.mktemp("clone")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = PROJECT / name
        if source.is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    return where


def run(clone: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as a shell in ``clone`` would run it (``> FILE`` included)."""
    args = shlex.split(command)
    assert args[0] == "python"
    target = None
    if ">" in args:
        at = args.index(">")
        args, target = args[:at], clone / args[at + 1]
    result = subprocess.run([sys.executable, *args[1:]], cwd=clone, env=clean_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    if target is not None:
        target.write_text(result.stdout, encoding="utf-8")
    return result


def test_the_docs_name_the_commands_this_test_runs() -> None:
    assert len(readme_commands("report.py")) >= 8
    assert "make demo" in README and "make run" in README
    using = (PROJECT / "docs" / "using-the-data.md").read_text(encoding="utf-8")
    assert len(shell_commands(using, "report.py")) >= 8


def test_make_demo_then_every_report_command_of_the_docs(clone: Path) -> None:
    make = subprocess.run(["make", "-n", "demo"], cwd=clone, capture_output=True, text=True,
                          check=False)
    assert "scripts/launch.py demo" in make.stdout, make.stdout + make.stderr
    demo = run(clone, "python scripts/launch.py demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "== stored batches ==" in demo.stdout and "report figure:" in demo.stdout
    assert "Traceback" not in demo.stderr
    for command in readme_commands("report.py"):
        result = run(clone, command)
        problems = [line for line in result.stderr.splitlines()
                    if " INFO " not in line and " WARNING " not in line]
        if result.returncode == 0:
            assert "Traceback" not in result.stderr, (command, result.stderr)
        else:  # e.g. the docs' example window holds nothing here: one line saying so
            assert result.returncode == 1 and len(problems) == 1, (command, result.stderr)
            assert problems[0].startswith("report.py: "), (command, problems)


@pytest.mark.parametrize("program", ["stream.py", "spark_streaming.py", "scrape.py",
                                     "report.py"])
def test_every_program_explains_itself(clone: Path, program: str) -> None:
    result = run(clone, f"python {program} --help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: "), result.stdout[:200]
