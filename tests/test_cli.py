"""The `onnxedge` group itself: its version, and a command registry in which every entry loads."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from onnxedge.runtime.cli import COMMANDS, main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_is_the_installed_distributions_and_pyprojects():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    match = re.fullmatch(r"onnxedge, version (\S+)\n", result.output)
    assert match, result.output
    assert match.group(1) == importlib.metadata.version("onnxedge")
    assert match.group(1) == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_every_registered_command_loads_under_its_name():
    """A command is one line in COMMANDS: "name" -> "module:attribute" of a click command."""
    for name, target in COMMANDS.items():
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), target
        assert command.name == name, target
    help_text = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)}\b", help_text, re.M), name


def test_progress_lines_only_with_verbose(smile_bundle, tmp_path):
    """`make export` prints a handful of lines: the export side's progress is for -v."""
    args = ["simplify", str(smile_bundle / "model.onnx"), "-o", str(tmp_path / "s.onnx")]
    args.append("--no-onnxsim")
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 0, quiet.output
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("  ")]
    assert "wrote " in quiet.stdout
    verbose = CliRunner().invoke(main, ["-v", *args, "--force"])  # s.onnx exists now
    assert verbose.exit_code == 0, verbose.output
    assert "  lowering the GAP head to GlobalAveragePool" in verbose.stderr.splitlines()
