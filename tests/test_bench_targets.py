"""The user's benchmark targets: the grammar, the TOML file, usage errors (exit 2) for what does
not parse or cannot be measured as asked, and a MISSED target failing the run (--fail-on-miss)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner

from onnxedge.runtime.bench import (
    E2E,
    FILES,
    GRAPH,
    LATENCY,
    ORT,
    RATIO,
    RESIDENT,
    BenchSettings,
    Side,
    TargetError,
    parse_target,
    read_targets_file,
)
from onnxedge.runtime.cli import main

ROOT = Path(__file__).resolve().parents[1]
# One engine pair at batch 1, timed 10 times each: enough runs to judge (MIN_RUNS_TO_JUDGE).
JUDGED = [
    "--providers",
    "cpu",
    "--peers",
    "eager",
    "--batch-sizes",
    "1",
    "--iters",
    "10",
    "--warmup",
    "1",
    "--rounds",
    "2",
    "--no-progress",
]


# ------------------------------------------------------------------------------------------------
# The grammar


@pytest.mark.parametrize(
    ("text", "kind", "device", "left", "right", "required", "batch"),
    [
        (
            "onnxruntime/torch-eager>=3.5@64",
            RATIO,
            "cpu",
            (ORT, E2E),
            ("torch-eager", E2E),
            3.5,
            64,
        ),
        (
            " onnxruntime / torch-compile >= 1.5x @ 64 ",
            RATIO,
            "cpu",
            (ORT, E2E),
            ("torch-compile", E2E),
            1.5,
            64,
        ),
        (
            "cpu:torch-channels-last/torch-eager>=1@8",
            RATIO,
            "cpu",
            ("torch-channels-last", E2E),
            ("torch-eager", E2E),
            1.0,
            8,
        ),
        (
            "cuda:onnxruntime[device-resident]/torch-eager[device-resident]>=2@max",
            RATIO,
            "cuda",
            (ORT, RESIDENT),
            ("torch-eager", RESIDENT),
            2.0,
            None,
        ),
        ("cuda:onnxruntime[cuda-graph] p50<=50us@1", LATENCY, "cuda", (ORT, GRAPH), None, 0.05, 1),
        (
            "onnxruntime[int8]/onnxruntime>=3@64",
            RATIO,
            "cpu",
            (ORT, E2E, "int8"),
            (ORT, E2E),
            3.0,
            64,
        ),
        (
            "cuda:onnxruntime[int8, device-resident]/torch-eager[device-resident]>=2@8",
            RATIO,
            "cuda",
            (ORT, RESIDENT, "int8"),
            ("torch-eager", RESIDENT),
            2.0,
            8,
        ),
        ("openvino/onnxruntime>=0.95@64", RATIO, "cpu", ("openvino", E2E), (ORT, E2E), 0.95, 64),
        (
            "openvino[int8]/onnxruntime[fp32]>=3@64",
            RATIO,
            "cpu",
            ("openvino", E2E, "int8"),
            (ORT, E2E),
            3.0,
            64,
        ),
        (
            "openvino[bf16]/openvino>=1@1",
            RATIO,
            "cpu",
            ("openvino", E2E, "fp32", "bf16"),
            ("openvino", E2E),
            1.0,
            1,
        ),
        (
            "onnxruntime[int8-ort]/onnxruntime[int8]>=1@8",
            RATIO,
            "cpu",
            (ORT, E2E, "int8-ort"),
            (ORT, E2E, "int8"),
            1.0,
            8,
        ),
        (
            "onnxruntime[from-files,int8]/onnxruntime[from-files]>=1.6@32",
            RATIO,
            "cpu",
            (ORT, FILES, "int8"),
            (ORT, FILES),
            1.6,
            32,
        ),
        ("cuda:onnxruntime[cuda-graph]p50<=50µs@1", LATENCY, "cuda", (ORT, GRAPH), None, 0.05, 1),
        ("p50<=0.6ms@1", LATENCY, "cpu", (ORT, E2E), None, 0.6, 1),
        ("torch-eager p50 <= 2 ms @ 64", LATENCY, "cpu", ("torch-eager", E2E), None, 2.0, 64),
    ],
)
def test_the_grammar(text, kind, device, left, right, required, batch):
    t = parse_target(text)
    assert (t.kind, t.device, t.left, t.batch_size) == (kind, device, Side(*left), batch)
    assert t.right == (Side(*right) if right else None)
    assert t.required == pytest.approx(required)
    assert t.name == t.text == text.strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a target such as"),
        ("onnxruntime>torch-eager", "cannot read the target"),
        ("onnxruntime/torch-eager>=3.5", "cannot read the target"),  # no batch
        ("onnxruntime/torch-eager<=3.5@64", "cannot read the target"),  # a ratio is at least
        ("p50>=1ms@1", "cannot read the target"),  # a latency is at most
        ("p50<=1s@1", "cannot read the target"),  # ms, us or µs
        ("onnxruntime/torch-eagre>=3@64", "unknown engine 'torch-eagre'; expected one of: "),
        ("gpu:onnxruntime/torch-eager>=3@64", "unknown device 'gpu'"),
        ("cuda:onnxruntime[graph] p50<=50us@1", "unknown mode, variant or precision 'graph'"),
        ("onnxruntime[int4]/onnxruntime>=2@1", "unknown mode, variant or precision 'int4'"),
        ("cuda:onnxruntime[from-files]/onnxruntime>=2@1", "from-files rows run on the cpu only"),
        ("onnxruntime[cuda-graph] p50<=50us@1", "on the cpu every engine runs end-to-end"),
        ("onnxruntime/onnxruntime>=2@1", "two different sides"),
        ("onnxruntime[int8]/onnxruntime[int8]>=2@1", "two different sides"),
        ("cuda:onnxruntime[cuda-graph,device-resident] p50<=1ms@1", "expected at most one mode"),
        ("onnxruntime[int8,fp16]/onnxruntime>=2@1", "at most one mode, one variant"),
        ("onnxruntime/torch-eager>=0@64", "expected a number > 0, found 0"),
        ("onnxruntime/torch-eager>=3@0", "expected a batch size >= 1, found 0"),
        ("p50<=0ms@1", "expected a number > 0"),
    ],
)
def test_bad_grammar_is_refused_with_what_was_expected(text, expected):
    with pytest.raises(TargetError, match=None) as err:
        parse_target(text)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text", ["onnxruntime/torch-eager=>3@64", "cuda:onnxruntime[graph] p50<=50us@1"]
)
def test_bad_grammar_on_the_command_line_is_a_usage_error(smile_bundle, text):
    result = CliRunner().invoke(main, ["bench", str(smile_bundle), *JUDGED, "--target", text])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--target'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("onnxruntime/torch-eager>=3@64", "at batch 64, which is not among the batch sizes"),
        ("onnxruntime/torch-compile>=1.5@1", "needs the engine torch-compile"),
        ("cuda:onnxruntime[cuda-graph] p50<=50us@1", "no cuda provider is asked for"),
        ("onnxruntime[int8]/onnxruntime>=3@1", "needs the int8 model, which this run does not"),
        ("onnxruntime[from-files]/openvino[from-files]>=1@1", "give image files with --images"),
    ],
)
def test_a_target_this_run_cannot_measure_is_a_usage_error(smile_bundle, target, expected):
    """A typo in the batch, a peer or provider left out: refused before the run, not reported
    NOT MEASURED (which --fail-on-miss would let pass)."""
    args = ["bench", str(smile_bundle), *JUDGED, "--variants", "fp32", "--target", target]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    with pytest.raises(TargetError, match=expected.split(",")[0]):
        BenchSettings(
            providers=("cpu",),
            peers=("eager",),
            batch_sizes=(1,),
            variants=("fp32",),
            targets=(parse_target(target),),
        )


def test_a_from_files_target_is_at_the_images_batch_size():
    target = parse_target("onnxruntime[from-files,int8]/onnxruntime[from-files]>=1.5@64")
    common = {"providers": ("cpu",), "peers": (), "batch_sizes": (1, 64), "targets": (target,)}
    with pytest.raises(TargetError, match="the from-files rows run at --images-batch-size 32"):
        BenchSettings(images=("a.jpg",), images_batch_size=32, **common)
    # at its own batch size it fits, whether or not that size is among --batch-sizes
    BenchSettings(images=("a.jpg",), images_batch_size=64, **common)


# ------------------------------------------------------------------------------------------------
# The TOML file


def test_targets_file(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text(
        '[[target]]\nname = "cpu-b64"\ntarget = "onnxruntime/torch-eager>=3.5@64"\n'
        'note = "set for a 2-core CPU"\n\n'
        '[[target]]\ntarget = "cuda:onnxruntime[cuda-graph] p50<=50us@1"\n'
    )
    first, second = read_targets_file(path)
    assert (first.name, first.text, first.required) == (
        "cpu-b64",
        "onnxruntime/torch-eager>=3.5@64",
        3.5,
    )
    assert "(set for a 2-core CPU)" in first.description
    assert second.name == second.text == "cuda:onnxruntime[cuda-graph] p50<=50us@1"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("target = [", "is not TOML"),
        ('targets = ["onnxruntime/torch-eager>=3@1"]', "expected one or more [[target]] tables"),
        ('target = "onnxruntime/torch-eager>=3@1"', "expected one or more [[target]] tables"),
        ('[[target]]\nname = "x"', "target 1: expected a 'target' key"),
        ('[[target]]\ntarget = "a>=b@1"', "target 1: cannot read the target 'a>=b@1'"),
        ('[[target]]\ntarget = "p50<=1ms@1"\nlimit = 3', "target 1: unknown key 'limit'"),
        ("[[target]]\ntarget = 3", "target 1: expected target, name and note as strings"),
        (
            '[[target]]\nname = "a"\ntarget = "p50<=1ms@1"\n[[target]]\nname = "a"\n'
            'target = "p50<=2ms@1"',
            "two targets are named 'a'",
        ),
    ],
)
def test_bad_targets_file_is_a_usage_error(smile_bundle, tmp_path, content, expected):
    path = tmp_path / "targets.toml"
    path.write_text(content)
    with pytest.raises(TargetError) as err:
        read_targets_file(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    result = CliRunner().invoke(main, ["bench", str(smile_bundle), *JUDGED, "--targets", path])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--targets'" in result.output


def test_missing_targets_file_is_a_usage_error(smile_bundle, tmp_path):
    args = ["bench", str(smile_bundle), *JUDGED, "--targets", str(tmp_path / "none.toml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "does not exist" in result.output


# ------------------------------------------------------------------------------------------------
# Judged in a real run: a target can be MISSED, and then --fail-on-miss fails the run


def test_a_missed_target_fails_the_run_only_with_fail_on_miss(smile_bundle, tmp_path):
    unreachable = "onnxruntime/torch-eager>=1000000@1"  # a million times PyTorch: missed
    reachable = "onnxruntime/torch-eager>=0.000001@1"
    out = tmp_path / "b.json"
    base = ["bench", str(smile_bundle), *JUDGED, "--json", str(out)]
    args = [*base, "--target", unreachable, "--target", reachable]

    failed = CliRunner().invoke(main, [*args, "--fail-on-miss"])
    assert_one_line_error(failed, "1 of 2 targets MISSED (--fail-on-miss)", unreachable)
    assert f"MISSED | {unreachable} | missed by " in failed.output
    assert f"MET | {reachable} | " in failed.output
    report = json.loads(out.read_text())  # the outputs are written before the exit
    status = {t["name"]: t["status"] for t in report["targets"]}
    assert status == {unreachable: "missed", reachable: "met"}
    missed = next(t for t in report["targets"] if t["name"] == unreachable)
    assert missed["missed_by"] > 1 and missed["target"] == unreachable

    passed = CliRunner().invoke(main, args)  # the same figures, without --fail-on-miss
    assert passed.exit_code == 0, passed.output
    assert f"MISSED | {unreachable} |" in passed.output
    # Without -v every line fits 120 columns but a table row, a heading, the command typed and a
    # warning (one line of at most 200 characters, docs/CLI.md).
    whole = ("|", "#", "- Command:", "onnxedge: warning:")
    long = [line for line in passed.output.splitlines() if len(line) > 120]
    assert [line for line in long if not line.startswith(whole)] == []

    met_only = CliRunner().invoke(main, [*base, "--target", reachable, "--fail-on-miss"])
    assert met_only.exit_code == 0, met_only.output


def test_a_latency_target_can_be_missed(smile_bundle, tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text('[[target]]\nname = "instant"\ntarget = "p50<=1us@1"\n')
    args = ["bench", str(smile_bundle), *JUDGED, "--targets", str(path), "--fail-on-miss"]
    result = CliRunner().invoke(main, args)
    assert_one_line_error(result, "1 of 1 targets MISSED", "instant")
    assert "MISSED | instant | missed by " in result.output and "required ≤ 1.0 µs" in result.output


def test_no_targets_no_verdicts(smile_bundle, tmp_path):
    md = tmp_path / "b.md"
    args = ["bench", str(smile_bundle), *JUDGED, "--markdown", str(md), "--fail-on-miss"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "None given (`--target`, `--targets FILE.toml`)." in md.read_text()
    for status in ("MET |", "MISSED |", "INDICATIVE |", "NOT MEASURED |"):
        assert status not in result.output


def test_the_projects_targets_in_the_makefile_parse():
    """`make bench` passes the project's figures as BENCH_TARGETS; each must be a valid target."""
    lines = (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()

    def targets_of(name: str) -> list:
        (line,) = [ln for ln in lines if ln.startswith(name)]
        words = shlex.split(line.partition("=")[2])
        return [parse_target(words[i + 1]) for i, w in enumerate(words) if w == "--target"]

    targets = targets_of("BENCH_TARGETS")
    assert len(targets) >= 3
    assert {t.device for t in targets} == {"cpu", "cuda"}
    files = targets_of("FILES_TARGETS")  # with BENCH_IMAGES: files to labels / model only
    assert len(files) == 3 and all(t.left.mode == "from-files" for t in files)
    assert all(t.right.mode == "end-to-end" for t in files)


def test_markdown_for_a_terminal_breaks_prose_and_items_but_not_tables():
    from onnxedge.runtime.lines import fit_markdown

    prose = "Throughput " + " ".join(["ratio"] * 30)
    item = "- SKIPPED | " + " ".join(["word"] * 40)
    quote = "> **Warning:** " + " ".join(["busy"] * 40)
    table = "| " + " | ".join(["cell"] * 40) + " |"
    fitted = fit_markdown("\n".join(["# title", prose, item, "", quote, table]), width=60)
    lines = fitted.splitlines()
    assert lines[0] == "# title" and table in lines and "" in lines
    assert all(len(line) <= 60 for line in lines if line != table)
    items = [line for line in lines if line.startswith("  word")]
    quotes = [line for line in lines if line.startswith("> busy")]
    assert items and quotes  # continuation lines stay in the list item and in the quote
    assert [line for line in lines if line.startswith("  ratio")]  # a paragraph's too
    joined = re.sub(r"\n(  |> )(?=word|busy|ratio)", " ", fitted)
    assert joined == "\n".join(["# title", prose, item, "", quote, table])  # nothing lost
