"""One CLI vocabulary (docs/CLI.md): every command's options, lazily loaded ones included, are
walked and held to one name per meaning; each rule is shown to fail on a command that breaks it;
and the shared options do what the table says."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import click
import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner

from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.manifest import VARIANTS

# Old spellings kept one release as hidden aliases that warn.
DEPRECATED = {"--provider", "--engine", "--openvino-precisions"}
# Option names of the vocabulary's meanings, by the word they contain.
NAMES = {
    "provider": {"--providers"},
    "engine": {"--engines"},
    "precision": {"--precision"},
    "variant": {"--variant", "--variants"},
    "json": {"--json"},
}
# Options that write an artifact a second run would replace.
WRITES = {"--out", "-o", "--output"}
# Commands whose --out is the run's measurement, replaced by each run as a report is.
REPORT_OUT = {"tune"}
# Accuracy figures, all percents.
PERCENTS = ("accuracy", "agreement")
# click's own range text, which the help must not show (`onnxedge.runtime.cli.options.PlainRange`).
RAW_RANGE = re.compile(r"\bx\s*[<>]=?|[<>]=?\s*x\b|None\]|\d{10,}")
# No line a user sees is longer (docs/CLI.md).
MAX_LINE = 200
# The fewest words that say what an option does ("PNG." does not).
MIN_WORDS = 3


def _names(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word of its own ("int8" is not in "int8-ort")."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def all_commands() -> dict[str, click.Command]:
    """Every command of the group by its full name ("data synth"), loaded as the CLI loads it."""
    ctx = click.Context(main)
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(main, "")
    return found


def violations(name: str, command: click.Command) -> list[str]:
    """What in ``command``'s options breaks the vocabulary, one line each."""
    found = []
    options = [p for p in command.params if isinstance(p, click.Option)]
    visible = {opt for p in options if not p.hidden for opt in p.opts + p.secondary_opts}
    for param in options:
        opts = param.opts + param.secondary_opts
        for opt in opts:
            if opt in DEPRECATED and not param.hidden:
                found.append(f"{name}: {opt} is an old spelling; hide it as an alias")
            for word, allowed in NAMES.items():
                if not param.hidden and word in opt and opt not in allowed and opt != "--require":
                    found.append(f"{name}: {opt} names a {word}; expected {sorted(allowed)}")
        if "--json" in opts and (param.is_flag or param.flag_value != "-"):
            found.append(f"{name}: --json must be --json [FILE] (stdout without FILE)")
        if any(word in opt for opt in opts for word in PERCENTS):
            kind = param.type
            if not isinstance(kind, click.FloatRange) or kind.max is None or kind.max < 100:
                found.append(f"{name}: {opts[0]} is an accuracy figure; expected a percent")
    for param in options:
        if not param.hidden and not param.help and param.name not in ("help", "version"):
            found.append(f"{name}: {param.opts[0]} has no description")
        elif not param.hidden and len((param.help or "").split()) < MIN_WORDS:
            found.append(f"{name}: {param.opts[0]}'s description {param.help!r} is too short")
        if not param.hidden and {"--variant", "--variants"} & set(param.opts):
            unnamed = [v for v in VARIANTS if not _names(param.help or "", v)]
            if unnamed:
                found.append(f"{name}: {param.opts[0]}'s description leaves out {unnamed}")
    help_text = command.get_help(click.Context(command, info_name=name))
    for line in help_text.splitlines():
        if RAW_RANGE.search(line):
            found.append(f"{name}: raw range text in its help: {line.strip()}")
    if visible & WRITES and "--force" not in visible and name not in REPORT_OUT:
        found.append(f"{name}: writes {sorted(visible & WRITES)[0]} but has no --force")
    for flag in ("-v", "-q"):
        if flag not in visible:
            found.append(f"{name}: no {flag}")
    return found


def test_every_command_speaks_the_vocabulary():
    commands = all_commands()
    # The walk reaches the lazily loaded commands, subcommands of groups included.
    assert {"export", "import", "predict", "bench", "data synth", "data info"} <= set(commands)
    problems = [line for name, cmd in commands.items() for line in violations(name, cmd)]
    assert problems == []


@click.command()
@click.option("--provider", type=click.Choice(["cpu", "cuda"]))
@click.option("--openvino-precisions")
@click.option("--json", "as_json", is_flag=True)
@click.option("--min-accuracy", type=click.FloatRange(0, 1))
@click.option("--out")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="A seed.")
@click.option("--lr", type=float, help="A rate.")
@click.option("--plot", help="PNG.")
@click.option("--variant", help="fp32 or int8, or the ORT-format int8-ort.")
def _broken(**kwargs):
    """A command that breaks every rule."""


def test_the_rules_fail_on_a_command_that_breaks_them():
    found = "\n".join(violations("broken", _broken))
    assert "--provider is an old spelling" in found
    assert "--provider names a provider" in found
    assert "--openvino-precisions names a precision" in found
    assert "--json must be --json [FILE]" in found
    assert "--min-accuracy is an accuracy figure" in found
    assert "writes --out but has no --force" in found
    assert "no -v" in found and "no -q" in found
    assert "--out has no description" in found
    assert "--plot's description 'PNG.' is too short" in found
    assert "--variant's description leaves out ['fp16', 'fp32-ort'," in found
    assert re.search(r"raw range text in its help: --seed .*A seed\.  \[0<=x<=922", found)
    assert "raw range text in its help: --lr" not in found  # a plain float shows none


def test_ranges_are_described_in_words_in_help_and_errors():
    """Every command's ranges go through `finite_numbers` (as the group loads them): the help
    says ``at least 1`` where click says ``x>=1``, and an out-of-range value is refused so."""
    from onnxedge.runtime.cli.options import finite_numbers

    fixed = finite_numbers(copy.deepcopy(_broken))  # it changes the command it is given
    help_text = fixed.get_help(click.Context(fixed, info_name="broken"))
    assert "[at least 0]" in help_text  # the seed's 2**63 - 1 is no limit to state
    assert not RAW_RANGE.search(help_text), help_text
    result = CliRunner().invoke(fixed, ["--seed", "-1"])
    assert result.exit_code == 2
    assert "Invalid value for '--seed': expected a number at least 0, found -1" in result.output
    result = CliRunner().invoke(fixed, ["--min-accuracy", "2"])
    assert "expected a number 0 to 1, found 2.0" in result.output


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_json_without_a_file_is_stdout_and_the_text_goes_to_stderr(smile_bundle, tmp_path):
    for args in (("--json",), ("--json", "-")):
        result = CliRunner().invoke(main, ["check", str(smile_bundle), *args])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["passed"] is True  # stdout is the JSON alone
        assert "PASSED | onnx" in result.stderr and "PASSED" not in result.stdout
    report = tmp_path / "check.json"
    result = invoke("check", smile_bundle, "--json", report)
    assert result.exit_code == 0 and json.loads(report.read_text())["passed"] is True


def test_verbosity_after_the_subcommand(smile_bundle):
    for args in (("check", smile_bundle, "-v"), ("-v", "check", smile_bundle, "-q")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output


def test_data_info_json_alone_still_prints_json(tmp_path):
    faces = tmp_path / "faces"
    result = invoke("data", "synth", "--out", faces, "--count", "10", "--workers", "1")
    assert result.exit_code == 0, result.output
    old = CliRunner().invoke(main, ["data", "info", str(faces), "--json"])
    assert old.exit_code == 0 and json.loads(old.stdout)["layout"]


def test_bench_precision_alias_warns_and_passes_its_value_on(smile_bundle, capsys):
    from onnxedge.runtime.cli.bench import bench_cmd

    ctx = bench_cmd.make_context("bench", [str(smile_bundle), "--openvino-precisions", "bf16"])
    assert ctx.params["openvino_precisions"] == ("bf16",)
    assert capsys.readouterr().err.count("--openvino-precisions is deprecated") == 1


def test_data_synth_refuses_to_replace_a_set_without_force(tmp_path):
    faces = tmp_path / "faces"
    args = ("data", "synth", "--out", faces, "--count", "10", "--workers", "1")
    assert invoke(*args).exit_code == 0
    before = sorted(p.name for p in faces.iterdir())
    again = invoke(*args)
    assert_one_line_error(again, f"{faces} exists", "--force")
    assert sorted(p.name for p in faces.iterdir()) == before
    assert invoke(*args, "--force").exit_code == 0


def test_min_accuracy_is_a_percent_and_a_fraction_is_refused(tmp_path, smile_bundle):
    result = invoke("evaluate", smile_bundle, "--data", tmp_path, "--min-accuracy", "0.97")
    assert result.exit_code == 2, result.output
    assert "expected a percent such as 97" in result.output and "give 97 for 97%" in result.output


@pytest.mark.parametrize(
    ("given", "expected"),
    [("cuda,cpu", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("auto", "auto"), ("cpu,cuda", "cpu")],
)
def test_providers_list_for_one_classifier(given, expected):
    from onnxedge.runtime.cli.predict import predict_cmd

    ctx = predict_cmd.make_context("predict", ["B", "x.jpg", "--providers", given])
    assert ctx.params["provider"] == expected


# Arguments a command needs before an option is parsed, and a value each old spelling takes.
NEEDS = {"predict": ["B", "x.jpg"], "evaluate": ["B", "--data", "D"]}
OLD_VALUES = {"--provider": "cpu", "--engine": "onnxruntime", "--openvino-precisions": "f32"}


def test_every_hidden_old_spelling_warns_once(capsys):
    aliases = [
        (name, cmd, opt)
        for name, cmd in all_commands().items()
        for param in cmd.params
        if isinstance(param, click.Option) and param.hidden
        for opt in param.opts
    ]
    assert {opt for *_, opt in aliases} == set(DEPRECATED)
    assert len(aliases) >= 5  # --engine and --provider in several commands
    for name, command, opt in aliases:
        args = [*NEEDS.get(name, ["B"]), opt, OLD_VALUES[opt]]
        command.make_context(name, args)
        err = capsys.readouterr().err
        assert err.count(f"onnxedge: warning: {opt} is deprecated") == 1, (name, opt, err)


def test_provider_alias_warns_and_passes_its_value_on(capsys):
    from onnxedge.runtime.cli.predict import predict_cmd

    ctx = predict_cmd.make_context("predict", ["B", "x.jpg", "--provider", "cpu"])
    assert ctx.params["provider"] == "cpu"
    assert capsys.readouterr().err.count("--provider is deprecated") == 1


def test_predict_refuses_an_image_name_as_its_json_file(smile_bundle, tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not touched")
    (tmp_path / "more").mkdir()
    result = invoke("predict", smile_bundle, "--json", image, tmp_path / "more")
    assert result.exit_code == 2 and "found an image name" in result.output
    assert image.read_bytes() == b"not touched"
    # where the folder holding it is an input too, it is refused as a file of the inputs
    result = invoke("predict", smile_bundle, "--json", image, tmp_path)
    assert result.exit_code == 2 and "expected a file outside what this command" in result.output
    assert image.read_bytes() == b"not touched"


def makefile_commands() -> list[list[str]]:
    """The arguments of every `$(BIN)/onnxedge ...` line of the Makefile (continuations joined,
    make's variables as a placeholder word, empty ones and `$(if ...)` dropped)."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[1] / "Makefile").read_text().replace("\\\n", " ")
    text = re.sub(r"\$\(if [^)]*\)\)?", "", text)
    text = re.sub(r"\$\((TRAIN_ARGS|EDGE_ARGS|BENCH_TARGETS)\)", "", text)
    text = re.sub(r"\$\([A-Z_]+\)", "X", text)
    return [
        shlex.split(line.split("X/onnxedge", 1)[1])
        for line in text.splitlines()
        if "X/onnxedge " in line
    ]


def test_the_makefile_speaks_the_vocabulary_and_reruns_with_force():
    commands = all_commands()
    ran = makefile_commands()
    assert len(ran) >= 8
    for args in ran:
        name = args[0] if args[0] in commands else " ".join(args[:2])
        command = commands[name]
        rest = args[len(name.split()) :]
        ctx = click.Context(command, resilient_parsing=True)
        parser = command.make_parser(ctx)
        opts, _, order = parser.parse_args(rest)
        hidden = [p.opts[0] for p in order if getattr(p, "hidden", False)]
        assert hidden == [], f"{name}: old spellings {hidden}"
        writes = {"out", "dst"} & set(opts)
        assert not writes or opts.get("force"), f"`make` reruns `onnxedge {name}` without --force"


def test_a_cuda_ep_that_does_not_load_says_what_to_do(smile_bundle, tmp_path):
    from onnxedge.runtime.classifier.session import cuda_missing

    long_error = RuntimeError("libcublasLt.so.12: cannot open shared object file " + "x" * 500)
    for asked, variant, advice in (
        ("auto", "fp16", "use --variant fp32 or int8 here"),
        ("cuda", "fp32", "use --providers cpu here"),
    ):
        line = cuda_missing(variant, asked, long_error)
        assert "install onnxedge[cuda] on a GPU machine" in line and advice in line
        assert len("onnxedge: error: " + line) <= 200 and "\n" not in line
    # On a machine whose CUDA EP does not load (as this CPU machine's), the command says so.
    result = invoke("predict", smile_bundle, tmp_path, "--providers", "cuda")
    if result.exit_code == 1:
        assert_one_line_error(result, "install onnxedge[cuda]", "--providers cpu")
        assert max(len(line) for line in result.output.splitlines()) <= 200


def test_a_gpu_variant_asked_for_on_the_cpu_says_what_to_use_in_one_short_line():
    from onnxedge.runtime.engines.onnxruntime.session import short_reason
    from onnxedge.runtime.variants.manifest import VariantEntry, provider_for

    fp16 = VariantEntry("fp16", "variants/fp16.onnx", "onnx", "fp16", ("cuda",), True, {})
    with pytest.raises(OnnxEdgeError) as e:
        provider_for({"fp16": fp16}, "fp16", "cpu")
    line = f"onnxedge: error: {e.value}"
    assert line.endswith("use --variant fp32 or int8") and "made for the cuda" in line
    assert len(line) <= MAX_LINE and "\n" not in line
    # parity's SKIPPED row gives it whole, the advice included
    assert short_reason(str(e.value)) == str(e.value)
    assert provider_for({"fp16": fp16}, "fp16", "auto") == "cuda"


def error_paths(tmp_path):
    """Invocations that fail on bad input, one or more per command: a path that does not exist,
    a text file where a bundle or model is expected, a bundle whose manifest is not JSON, and
    values out of range. Paths relative to ``tmp_path`` (the working directory), as a user types
    them: a path is the user's and is never cut, so its length is not the message's."""
    missing = Path("no-such-bundle")
    text = Path("notes.txt")
    (tmp_path / text).write_text("not a model\n")
    broken = Path("broken")
    (tmp_path / broken).mkdir()
    (tmp_path / broken / "manifest.json").write_text("{not json")
    out = Path("out")
    paths = {"missing": missing, "text file": text, "bad manifest": broken}
    calls = []
    for what, target in paths.items():
        calls += [
            (what, ("check", target)),
            (what, ("inspect", target)),
            (what, ("parity", target, "--providers", "cpu")),
            (what, ("predict", target, ".")),
            (what, ("evaluate", target, "--data", ".")),
            (what, ("optimize", target, "--data", ".", "--out", out)),
            (what, ("bench", target, "--iters", "1")),
            (what, ("tune", target)),
            (what, ("pack", target, "--out", out)),
            (what, ("data", "info", target)),
            (what, ("simplify", target, "-o", out / "m.onnx")),
            (what, ("import", target, "--out", out)),
            (what, ("export", "--checkpoint", target, "--out", out)),
        ]
    calls += [
        ("range", ("bench", missing, "--iters", "0")),
        ("range", ("data", "synth", "--out", out, "--count", "3")),
        ("range", ("train", "--data", ".", "--out", out, "--seed", "-1")),
        ("range", ("parity", missing, "--atol", "nan")),
        ("choice", ("parity", missing, "--providers", "tpu")),
        ("percent", ("evaluate", missing, "--data", ".", "--min-accuracy", "0.9")),
    ]
    return calls


def test_every_error_is_lines_of_at_most_200_characters(tmp_path, monkeypatch):
    """Over the commands' error paths: exit 1 or 2, no traceback, no line over `MAX_LINE`."""
    monkeypatch.chdir(tmp_path)
    long_lines = []
    for what, args in error_paths(tmp_path):
        result = invoke(*args)
        shown = " ".join(map(str, args))
        assert result.exit_code in (1, 2), f"{what}: onnxedge {shown}\n{result.output}"
        assert "Traceback" not in result.output, f"{what}: onnxedge {shown}\n{result.output}"
        long_lines += [
            f"{what}: onnxedge {shown}: {line}"
            for line in result.output.splitlines()
            if len(line) > MAX_LINE
        ]
    assert long_lines == []


def test_a_message_over_several_lines_is_printed_as_one():
    from onnxedge.runtime.lines import one_line

    assert one_line("onnxruntime says:\n  no such file\n") == "onnxruntime says: no such file"
    path = "/tmp/" + "d" * 300 + "/notes.txt"
    assert path in one_line(f"{path} is not an ONNX model")  # a path is never cut


def test_predict_output_is_replaced_only_with_force(smile_bundle, tmp_path):
    """--output (predict --ray's Parquet file) follows the --force rule, refused before any
    work; the file is left as it was."""
    existing = tmp_path / "rows.parquet"
    existing.write_bytes(b"earlier rows")
    result = invoke("predict", smile_bundle, tmp_path, "--ray", "--output", existing)
    assert_one_line_error(result, f"{existing} exists", "--force")
    assert existing.read_bytes() == b"earlier rows"
