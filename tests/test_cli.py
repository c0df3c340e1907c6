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


def _without_onnx_ir(monkeypatch):
    """As on a device without the export extra: importing onnx_ir fails, and the modules that
    import it are imported again."""
    monkeypatch.setitem(sys.modules, "onnx_ir", None)  # `import onnx_ir` raises ImportError
    for name in list(sys.modules):
        if name.startswith("onnxedge.export."):
            monkeypatch.delitem(sys.modules, name)


def test_import_without_onnx_ir_is_listed_and_says_what_to_install(monkeypatch):
    _without_onnx_ir(monkeypatch)
    help_result = CliRunner().invoke(main, ["--help"])
    assert help_result.exit_code == 0, help_result.output
    assert re.search(r"^  import\b", help_result.output, re.M)
    own_help = CliRunner().invoke(main, ["import", "--help"])  # its options load without it
    assert own_help.exit_code == 0 and "--input-layout [auto|NCHW|NHWC]" in own_help.output
    result = CliRunner().invoke(main, ["import", "x.onnx", "--out", "y"])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "onnxedge: error: onnxedge import needs onnx_ir, not installed here; install with: pip "
        "install 'onnxedge[export]'\n"
    )


def test_a_command_whose_module_cannot_load_is_one_line_not_a_traceback(monkeypatch, tmp_path):
    (tmp_path / "broken_command_module.py").write_text("import not_a_real_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "broken", "broken_command_module:cmd")
    help_result = CliRunner().invoke(main, ["--help"])
    assert help_result.exit_code == 0, help_result.output
    assert re.search(r"^  broken\s+\(unavailable: onnxedge broken needs", help_result.output, re.M)
    for args in (["broken"], ["broken", "a", "--any-option", "-v"], ["broken", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.stderr == (
            "onnxedge: error: onnxedge broken needs not_a_real_package_xyz, not installed here; "
            "install with: pip install --force-reinstall onnxedge\n"
        ), args


def test_a_broken_import_inside_onnxedge_keeps_its_traceback(monkeypatch, tmp_path):
    """An onnxedge module that imports one of onnxedge's that is gone is a bug of onnxedge, not
    a dependency to install: it is raised as it is (errors.py), not turned into install advice."""
    (tmp_path / "bug_command_module.py").write_text(
        "from onnxedge.runtime import no_such_module_xyz\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "bug", "bug_command_module:cmd")
    result = CliRunner().invoke(main, ["bug"])
    assert isinstance(result.exception, ImportError), result.output
    assert "install with" not in result.output


def test_a_dependency_that_fails_to_load_without_a_module_name_is_one_line(monkeypatch, tmp_path):
    """A dependency's own ImportError with no module name (torch's "Failed to load PyTorch C
    extensions", a missing shared library) is the command's one line, and --help still works."""
    (tmp_path / "nameless_command_module.py").write_text(
        "raise ImportError('libfoo.so: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "nameless", "nameless_command_module:cmd")
    help_result = CliRunner().invoke(main, ["--help"])
    assert help_result.exit_code == 0, help_result.output
    result = CliRunner().invoke(main, ["nameless"])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "onnxedge: error: onnxedge nameless cannot load here: libfoo.so: cannot open shared "
        "object file\n"
    )


def test_an_export_command_missing_a_dependency_names_the_export_extra():
    from onnxedge.runtime.cli import _unavailable
    from onnxedge.runtime.errors import OnnxEdgeError

    command = _unavailable(
        "import", "onnxedge.export.cli.import_onnx", ModuleNotFoundError("no", name="onnx_ir.x")
    )
    try:
        command.callback(args=("a",))
    except OnnxEdgeError as e:
        assert str(e) == (
            "onnxedge import needs onnx_ir, not installed here; install with: pip install "
            "'onnxedge[export]'"
        )
    else:
        raise AssertionError("the stand-in command ran")


def test_the_export_api_names_what_to_install_where_a_dependency_is_missing(monkeypatch):
    import onnxedge.export

    _without_onnx_ir(monkeypatch)
    monkeypatch.delitem(vars(onnxedge.export), "import_bundle", raising=False)
    try:
        onnxedge.export.import_bundle  # noqa: B018
    except ModuleNotFoundError as e:
        assert str(e) == (
            "onnxedge.export.import_bundle needs onnx_ir, not installed here; install with: "
            "pip install 'onnxedge[export]'"
        )
        assert e.name == "onnx_ir"
    else:
        raise AssertionError("import_bundle loaded without onnx_ir")


def test_simplify_refuses_to_write_over_a_bundles_listed_file(smile_bundle, tmp_path):
    """``simplify B/model.onnx --out B/model.onnx --force`` wrote over the bundle's model, and
    every command then refused the bundle as changed."""
    import shutil

    from onnxedge.runtime.bundle.reader import Bundle

    bundle = tmp_path / "b"
    shutil.copytree(smile_bundle, bundle)
    model = bundle / "model.onnx"
    result = CliRunner().invoke(
        main, ["simplify", str(model), "--out", str(model), "--force", "--no-onnxsim"]
    )
    assert result.exit_code == 2, result.output
    assert "expected a file outside a bundle's own files, found model.onnx" in result.output
    over_manifest = CliRunner().invoke(
        main, ["simplify", str(model), "-o", str(bundle / "manifest.json"), "--force"]
    )  # the manifest lists every file but itself
    assert over_manifest.exit_code == 2 and "found manifest.json of the bundle" in (
        over_manifest.output
    )
    Bundle.open(bundle)  # still whole
    beside = CliRunner().invoke(
        main, ["simplify", str(model), "--out", str(bundle / "copy.onnx"), "--no-onnxsim"]
    )
    assert beside.exit_code == 0, beside.output  # a file the bundle does not list is written
