"""`onnxedge bench`: the statistics, the target evaluation, the output check, a short real run
(JSON, Markdown, PNG), skipped peers and providers. Tiny iteration counts: no timing is asserted."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from cli_assertions import assert_one_line_error, unwrap_markdown
from click.testing import CliRunner
from PIL import Image
from torchless import run_without_torch

from onnxedge.runtime.bench import (
    E2E,
    GRAPH,
    MIN_RUNS_TO_JUDGE,
    ORT,
    PYTORCH,
    RESIDENT,
    BenchRow,
    BenchSettings,
    EngineInfo,
    LatencyStats,
    OrtEngine,
    SkippedEngine,
    TimingPlan,
    compute_ratios,
    evaluate_target,
    evaluate_targets,
    make_input,
    parse_target,
    render_markdown,
    run_benchmark,
)
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig
from onnxedge.runtime.errors import OnnxEdgeError

SHORT = ["--batch-sizes", "1,2", "--iters", "3", "--warmup", "1", "--no-progress"]


# Where a GPU might be, the CUDA rows may run: the no-GPU expectations are checked only without one.
NO_CUDA = not Path("/dev/nvidiactl").exists()


# ------------------------------------------------------------------------------------------------
# Statistics, by hand


def test_stats_against_hand_computed_samples():
    s = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004, 0.005], batch_size=2, warmup=4)
    # numpy "linear": position q/100 * (n - 1) between order statistics.
    # p90: 0.9 * 4 = 3.6 -> 4 + 0.6 * (5 - 4) = 4.6; p99: 3.96 -> 4.96.
    assert s.p50_ms == pytest.approx(3.0)
    assert s.p90_ms == pytest.approx(4.6)
    assert s.p99_ms == pytest.approx(4.96)
    assert s.mean_ms == pytest.approx(3.0)
    assert s.min_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(5.0)
    assert s.throughput == pytest.approx(2 / 0.003)  # batch / mean latency
    assert (s.runs, s.warmup, s.batch_size) == (5, 4, 2)


def test_stats_unsorted_even_count():
    s = LatencyStats.from_seconds([0.004, 0.001, 0.003, 0.002], batch_size=1)
    # sorted 1 2 3 4: p50 at 1.5 -> 2.5; p90 at 2.7 -> 3.7; p99 at 2.97 -> 3.97.
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((2.5, 3.7, 3.97))
    assert s.mean_ms == pytest.approx(2.5)
    assert s.throughput == pytest.approx(400.0)


@pytest.mark.parametrize("samples", [[], [0.001, float("nan")], [-0.001, 0.002], [0.0, 0.0]])
def test_stats_reject_bad_samples(samples):
    with pytest.raises(ValueError):
        LatencyStats.from_seconds(samples, batch_size=1)


def test_timing_plan_splits_iters_over_rounds():
    plan = TimingPlan(iters=10, seconds=None, rounds=4)
    counts = [plan.quota(r) for r in range(plan.effective_rounds)]
    assert sum(c[0] for c in counts) == 10
    assert all(c[0] == c[1] and c[2] is None for c in counts)
    assert TimingPlan(iters=2, seconds=None, rounds=4).effective_rounds == 2
    with pytest.raises(OnnxEdgeError, match="exactly one"):
        TimingPlan(iters=3, seconds=1.0)


# ------------------------------------------------------------------------------------------------
# Targets and ratios from made-up rows: the evaluation can fail


def _row(engine, device, mode, batch, mean_ms, family=None, status="ok", reason="", runs=None):
    family = family or (ORT if engine == ORT else PYTORCH)
    info = EngineInfo(engine, family, device, mode, "test")
    if status != "ok":
        return BenchRow(info, batch, status, reason)
    runs = MIN_RUNS_TO_JUDGE if runs is None else runs
    stats = LatencyStats.from_seconds([mean_ms / 1e3] * runs, batch_size=batch)
    return BenchRow(info, batch, "ok", stats=stats)


# The figures of docs/BENCHMARKS.md's targets, as test data (the product holds none).
TARGET_TEXTS = {
    "cpu-b64-vs-eager": "onnxruntime/torch-eager>=3.5@64",
    "cpu-b1-vs-eager": "onnxruntime/torch-eager>=3@1",
    "cpu-b64-vs-compile": "onnxruntime/torch-compile>=1.5@64",
    "cuda-b1-p50-graph": "cuda:onnxruntime[cuda-graph] p50<=50us@1",
    "cuda-large-vs-eager": "cuda:onnxruntime[device-resident]/torch-eager[device-resident]>=2@max",
}
TARGETS = [parse_target(text, name=name) for name, text in TARGET_TEXTS.items()]


def _target(name):
    return next(t for t in TARGETS if t.name == name)


def test_target_missed_by_how_much():
    rows = [_row(ORT, "cpu", E2E, 64, 100.0), _row("torch-eager", "cpu", E2E, 64, 200.0)]
    result = evaluate_target(_target("cpu-b64-vs-eager"), rows)
    assert not result
    assert result.status == "missed"
    assert result.measured == pytest.approx(2.0)
    assert result.missed_by == pytest.approx(1.75)  # 3.5 / 2
    assert "missed by 1.75×" in result.detail
    assert str(result).startswith("MISSED | cpu-b64-vs-eager |")


def test_target_missed_when_ort_is_slower():
    rows = [_row(ORT, "cpu", E2E, 1, 5.0), _row("torch-eager", "cpu", E2E, 1, 2.5)]
    result = evaluate_target(_target("cpu-b1-vs-eager"), rows)
    assert result.status == "missed" and result.measured == pytest.approx(0.5)
    assert result.missed_by == pytest.approx(6.0)


def test_target_met():
    rows = [_row(ORT, "cpu", E2E, 64, 10.0), _row("torch-compile", "cpu", E2E, 64, 20.0)]
    result = evaluate_target(_target("cpu-b64-vs-compile"), rows)
    assert result and result.status == "met" and result.missed_by is None


def test_latency_target_met_and_missed():
    target = _target("cuda-b1-p50-graph")
    assert evaluate_target(target, [_row(ORT, "cuda", GRAPH, 1, 0.040)])
    missed = evaluate_target(target, [_row(ORT, "cuda", GRAPH, 1, 0.090)])
    assert missed.status == "missed" and missed.missed_by == pytest.approx(1.8)


@pytest.mark.parametrize(
    ("ort_runs", "peer_runs", "status"),
    [
        (MIN_RUNS_TO_JUDGE, MIN_RUNS_TO_JUDGE, "met"),
        (MIN_RUNS_TO_JUDGE - 1, 500, "indicative"),
        (500, 2, "indicative"),
    ],
)
def test_a_ratio_target_is_judged_only_from_enough_runs(ort_runs, peer_runs, status):
    # 4.81x against a required 3x: met from enough runs, but not from two.
    rows = [
        _row(ORT, "cpu", E2E, 1, 1.0, runs=ort_runs),
        _row("torch-eager", "cpu", E2E, 1, 4.81, runs=peer_runs),
    ]
    result = evaluate_target(_target("cpu-b1-vs-eager"), rows)
    assert result.status == status
    assert result.measured == pytest.approx(4.81)
    if status == "indicative":
        fewest = min(ort_runs, peer_runs)
        assert not result and result.missed_by is None
        assert f"not enough runs to judge ({fewest} < {MIN_RUNS_TO_JUDGE})" in result.detail
        assert str(result).startswith("INDICATIVE | cpu-b1-vs-eager | not enough runs")


def test_a_missed_target_from_few_runs_is_not_missed_either():
    rows = [
        _row(ORT, "cpu", E2E, 64, 100.0, runs=3),
        _row("torch-eager", "cpu", E2E, 64, 200.0, runs=3),
    ]
    assert evaluate_target(_target("cpu-b64-vs-eager"), rows).status == "indicative"
    latency = _target("cuda-b1-p50-graph")
    for mean_ms in (0.040, 0.090):  # would be met, missed
        result = evaluate_target(latency, [_row(ORT, "cuda", GRAPH, 1, mean_ms, runs=2)])
        assert result.status == "indicative" and "(2 < 10)" in result.detail
    assert evaluate_target(latency, [_row(ORT, "cuda", GRAPH, 1, 0.04)], min_runs=1)


def test_target_not_measured_says_why():
    rows = [
        _row(ORT, "cuda", RESIDENT, 256, 0, status="skipped", reason="no GPU here"),
        _row("torch-eager", "cuda", RESIDENT, 256, 0, status="skipped", reason="no GPU here"),
    ]
    results = {r.name: r for r in evaluate_targets(rows, TARGETS)}
    assert results["cuda-large-vs-eager"].status == "not measured"
    assert "no GPU here" in results["cuda-large-vs-eager"].detail
    assert results["cpu-b1-vs-eager"].status == "not measured"
    assert "batch 1" in results["cpu-b1-vs-eager"].detail
    assert not any(results.values())


def test_largest_batch_target_uses_the_largest_common_batch():
    rows = [
        _row(ORT, "cuda", RESIDENT, 64, 1.0),
        _row("torch-eager", "cuda", RESIDENT, 64, 3.0),
        _row(ORT, "cuda", RESIDENT, 256, 2.0),
        _row("torch-eager", "cuda", RESIDENT, 256, 3.0, status="failed", reason="oom"),
    ]
    result = evaluate_target(_target("cuda-large-vs-eager"), rows)
    assert result.batch_size == 64 and result.measured == pytest.approx(3.0)


def test_ratios_match_device_batch_and_mode():
    rows = [
        _row(ORT, "cpu", E2E, 8, 2.0),
        _row("torch-eager", "cpu", E2E, 8, 6.0),
        _row("torch-eager", "cpu", E2E, 1, 1.0),  # another batch size: no ratio
        _row(ORT, "cuda", GRAPH, 8, 0.5),
        _row("torch-eager", "cuda", RESIDENT, 8, 1.0),
        _row("torch-eager", "cuda", E2E, 8, 3.0),  # a CUDA graph is compared device-resident
    ]
    got = {(q.ort, q.peer): q.ratio for q in compute_ratios(rows)}
    assert got == pytest.approx(
        {
            ("onnxruntime cpu end-to-end", "torch-eager cpu end-to-end"): 3.0,
            ("onnxruntime cuda cuda-graph", "torch-eager cuda device-resident"): 2.0,
        }
    )


# ------------------------------------------------------------------------------------------------
# The run loop with fake engines: the output check can fail, a failing engine does not stop others


class _FakeRunner:
    def __init__(self, x, fn):
        self.x, self.fn, self.extras, self.calls = x, fn, {}, 0

    def run(self):
        self.calls += 1

    def output(self):
        return self.fn(self.x)

    def close(self):
        pass


class _FakeEngine:
    def __init__(self, info, fn, fail_at=None):
        self.info, self.fn, self.fail_at = info, fn, fail_at

    def prepare(self, x):
        if x.shape[0] == self.fail_at:
            raise RuntimeError("out of memory")
        return _FakeRunner(x, self.fn)

    def close(self):
        pass


def test_output_check_fails_an_engine_that_is_not_the_model():
    def model(x):
        return x.mean(axis=(1, 2, 3))[:, None]

    ref = _FakeEngine(EngineInfo(ORT, ORT, "cpu", E2E, "fake"), model)
    same = _FakeEngine(EngineInfo("torch-eager", PYTORCH, "cpu", E2E, "fake"), model)
    wrong = _FakeEngine(
        EngineInfo("torch-channels-last", PYTORCH, "cpu", E2E, "fake"), lambda x: model(x) + 0.01
    )
    broken = _FakeEngine(EngineInfo("torch-compile", PYTORCH, "cpu", E2E, "fake"), model, fail_at=2)
    skipped = SkippedEngine(EngineInfo(ORT, ORT, "cuda", E2E, "fake"), "no GPU")
    settings = BenchSettings(batch_sizes=(1, 2), plan=TimingPlan(warmup=1, iters=3, seconds=None))
    progress = []
    rows = run_benchmark(
        [ref, same, wrong, broken, skipped],
        (3, 4, 4),
        settings,
        on_progress=lambda d, done, total: progress.append((done, total)),
    )
    by = {(r.info.engine, r.info.device, r.batch_size): r for r in rows}
    assert len(rows) == 10  # every engine x batch size has a row
    assert by[(ORT, "cpu", 1)].check == "reference" and by[(ORT, "cpu", 1)].stats.runs == 3
    assert by[("torch-eager", "cpu", 2)] and by[("torch-eager", "cpu", 2)].check.startswith(
        "PASSED"
    )
    bad = by[("torch-channels-last", "cpu", 1)]
    assert bad.status == "failed" and bad.stats is None and "output differs" in bad.reason
    assert by[("torch-compile", "cpu", 1)]
    assert by[("torch-compile", "cpu", 2)].status == "skipped"
    assert "out of memory" in by[("torch-compile", "cpu", 2)].reason
    assert by[(ORT, "cuda", 2)].status == "skipped" and by[(ORT, "cuda", 2)].reason == "no GPU"
    assert progress[-1][0] == progress[-1][1]  # the bar ends full


def test_a_low_precision_engines_check_is_at_the_outputs_scale():
    """int8 engines compared on K-class logits: 0.01 of a logit of 20 is rounding (OpenVINO's
    int8 against ONNX Runtime's was 'failed, not timed' at 0.2); an engine computing something
    else is off by the output's own scale, and still fails."""
    from onnxedge.runtime.bench.models import LOW_PRECISION_ATOL, scaled_atol

    assert scaled_atol(LOW_PRECISION_ATOL, [[0.2, 0.9]]) == LOW_PRECISION_ATOL  # probabilities
    assert scaled_atol(LOW_PRECISION_ATOL, [[-20.0, 3.0, np.inf]]) == pytest.approx(0.2)

    def logits(x):
        return 20 * np.stack([x.mean(axis=(1, 2, 3)), -x.mean(axis=(1, 2, 3))], axis=1)

    def int8(name, fn):
        engine = _FakeEngine(EngineInfo(name, ORT, "cpu", E2E, "fake"), fn)
        engine.check_atol, engine.reference_key = LOW_PRECISION_ATOL, "int8"
        return engine

    reference = int8("ort-int8", logits)
    rounded = int8("openvino-int8", lambda x: logits(x) + 0.05)
    other = int8("broken-int8", lambda x: logits(x)[:, ::-1])
    settings = BenchSettings(batch_sizes=(2,), plan=TimingPlan(warmup=1, iters=2, seconds=None))
    rows = {
        r.info.engine: r for r in run_benchmark([reference, rounded, other], (3, 4, 4), settings)
    }
    assert rows["openvino-int8"].status != "failed", rows["openvino-int8"].reason
    assert rows["broken-int8"].status == "failed" and "output differs" in rows["broken-int8"].reason


def test_the_progress_says_when_a_warm_up_compiles(smile_bundle):
    """torch.compile's warm-up (its first call compiles) is named as such in the progress bar
    and the heartbeat, not shown as a plain warm-up."""
    from onnxedge.models import peers

    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    built = peers.build_peers(
        manifest, peers=["eager", "compile"], devices=["cpu"], threads=_torch_threads()
    )
    by = {e.info.engine: e for e in built}
    if isinstance(by["torch-compile"], SkippedEngine):
        pytest.skip(f"no torch.compile peer here: {by['torch-compile'].reason}")
    assert by["torch-compile"].warmup_note.startswith("compiling")
    assert not by["torch-eager"].warmup_note

    def model(x):
        return x.mean(axis=(1, 2, 3))[:, None]

    compiled = _FakeEngine(EngineInfo("torch-compile", PYTORCH, "cpu", E2E, "fake"), model)
    compiled.warmup_note = by["torch-compile"].warmup_note
    plain = _FakeEngine(EngineInfo(ORT, ORT, "cpu", E2E, "fake"), model)
    said = []
    settings = BenchSettings(batch_sizes=(1,), plan=TimingPlan(warmup=1, iters=2, seconds=None))
    run_benchmark([plain, compiled], (3, 4, 4), settings, on_progress=lambda d, *_: said.append(d))
    first = {}
    for d in said:
        first.setdefault(d.split(" · ")[1] if d.count(" · ") == 2 else "", d)
    assert first["onnxruntime cpu end-to-end"].endswith(" · warm-up"), said
    assert first["torch-compile cpu end-to-end"].endswith(
        " · compiling (torch.compile's first call)"
    ), said


def test_inputs_are_fixed_per_seed_and_batch():
    a, b = make_input((3, 64, 64), 8, 0), make_input((3, 64, 64), 8, 0)
    assert a.dtype == np.float32 and a.shape == (8, 3, 64, 64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, make_input((3, 64, 64), 8, 1))
    assert a.min() >= 0.0 and a.max() < 1.0


def test_io_binding_runner_matches_host_runner_on_cpu(smile_bundle):
    """The IO-binding path (device-resident, CUDA graph) exercised on the CPU EP."""
    model = smile_bundle / "model.onnx"
    x = make_input((3, 64, 64), 3, 0)
    host = OrtEngine(
        EngineInfo(ORT, ORT, "cpu", E2E, "cpu"), model, SessionConfig(threads=_torch_threads())
    )
    bound = OrtEngine(
        EngineInfo(ORT, ORT, "cpu", RESIDENT, "cpu"), model, SessionConfig(threads=_torch_threads())
    )
    want = host.prepare(x).output()
    runner = bound.prepare(x)
    runner.run()
    got = runner.output()
    assert got.shape == (3, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# A short real run through the CLI


@pytest.fixture(scope="module")
def short_run(smile_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # ONNX Runtime and the peers only: the OpenVINO rows have their own tests
    # (tests/test_bench_openvino.py)
    args = ["bench", str(smile_bundle), *SHORT, "--peers", "eager,channels-last"]
    args += ["--engines", "onnxruntime"]
    args += ["--target", "onnxruntime/torch-eager>=3@1"]
    args += ["--target", "cuda:onnxruntime/torch-eager>=3@2"]
    args += ["--json", str(out / "b.json"), "--markdown", str(out / "b.md")]
    args += ["--plot", str(out / "b.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_short_run_json_is_well_formed(short_run):
    out, _ = short_run
    report = json.loads((out / "b.json").read_text())
    for key in ("date", "command", "machine", "versions", "settings", "rows", "ratios", "targets"):
        assert key in report
    assert report["machine"]["cpu"] and report["machine"]["logical_cores"] >= 1
    assert report["versions"]["onnxruntime"] and report["versions"]["torch"]
    assert report["settings"]["batch_sizes"] == [1, 2]
    labels = {r["label"] for r in report["rows"]}
    for label in labels:
        assert sorted(r["batch_size"] for r in report["rows"] if r["label"] == label) == [1, 2]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert {r["label"] for r in ok} >= {
        "onnxruntime cpu end-to-end",
        "torch-eager cpu end-to-end",
        "torch-channels-last cpu end-to-end",
    }
    for r in ok:
        st = r["stats"]
        assert st["runs"] == 3 and st["warmup"] >= 1
        assert 0 < st["min_ms"] <= st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"] <= st["max_ms"]
        assert st["throughput"] == pytest.approx(r["batch_size"] / (st["mean_ms"] / 1e3))
    not_ok = [r for r in report["rows"] if r["status"] != "ok"]
    assert all(r["reason"] and r["stats"] is None for r in not_ok)
    ratios = {(q["batch_size"], q["peer"]) for q in report["ratios"]}
    assert (1, "torch-eager cpu end-to-end") in ratios
    assert (2, "torch-channels-last cpu end-to-end") in ratios
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {"onnxruntime/torch-eager>=3@1", "cuda:onnxruntime/torch-eager>=3@2"}
    if NO_CUDA:
        cuda = targets["cuda:onnxruntime/torch-eager>=3@2"]
        assert cuda["status"] == "not measured" and "skipped" in cuda["detail"]
    # --iters 3: a figure, never a verdict
    assert targets["onnxruntime/torch-eager>=3@1"]["status"] == "indicative"
    assert targets["onnxruntime/torch-eager>=3@1"]["measured"] > 0


def test_short_run_markdown(short_run):
    out, stdout = short_run
    md = (out / "b.md").read_text()
    header = "| batch | engine | device | mode | p50 ms | p90 ms | p99 ms | mean ms | min ms |"
    assert header in md
    report = json.loads((out / "b.json").read_text())
    measured = [r for r in report["rows"] if r["status"] == "ok"]
    table_rows = [
        line
        for line in md.split("## ORT / PyTorch")[0].splitlines()
        if line.startswith(("| 1 |", "| 2 |"))
    ]
    assert len(table_rows) == len(measured) == 6
    assert "## Targets" in md and "ORT / peer throughput" in md
    printed = unwrap_markdown(stdout)  # the terminal's copy breaks the long items
    assert md in printed, next(
        (line for line in md.splitlines() if line not in printed.splitlines()), None
    )
    if NO_CUDA:
        assert "NOT MEASURED | cuda:onnxruntime/torch-eager>=3@2 |" in stdout
    assert "INDICATIVE | onnxruntime/torch-eager>=3@1 | not enough runs to judge (3 < 10)" in stdout
    assert "MET |" not in stdout.replace("NOT MEASURED |", "") and "MISSED |" not in stdout


def test_a_skipped_provider_is_one_line_with_its_first_cause(short_run):
    out, _ = short_run
    md = (out / "b.md").read_text()
    section = md.split("## Not measured")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    providers = [line.split(" | ")[1].split(":")[0] for line in lines]
    assert len(providers) == len(set(providers)), lines  # one line per provider
    if NO_CUDA:
        (cuda,) = [line for line in lines if line.startswith("- SKIPPED | CUDAExecutionProvider")]
        assert (
            "onnxruntime (end-to-end, device-resident, cuda-graph) | batch 1, 2 | CUDA EP: " in cuda
        )
        assert "requested CUDAExecutionProvider" not in cuda  # the full message: JSON and -v
        report = json.loads((out / "b.json").read_text())
        reasons = [r["reason"] for r in report["rows"] if r["provider"] == "CUDAExecutionProvider"]
        assert all(r.startswith("requested CUDAExecutionProvider") for r in reasons)


def test_a_variant_target_compares_variant_rows():
    int8 = EngineInfo(ORT, ORT, "cpu", E2E, "test", variant="int8")
    stats = LatencyStats.from_seconds([0.010] * MIN_RUNS_TO_JUDGE, batch_size=64)
    rows = [
        _row(ORT, "cpu", E2E, 64, 40.0),
        BenchRow(int8, 64, "ok", stats=stats),
    ]
    result = evaluate_target(parse_target("onnxruntime[int8]/onnxruntime>=3@64"), rows)
    assert result.status == "met" and result.measured == pytest.approx(4.0)
    missed = evaluate_target(parse_target("onnxruntime[int8]/onnxruntime>=5@64"), rows)
    assert missed.status == "missed"


def test_short_run_png_opens(short_run):
    out, _ = short_run
    path = out / "b.png"
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_cuda_rows_are_skipped_with_a_reason_here(short_run, smile_bundle):
    from onnxedge.runtime.engines.onnxruntime.session import make_session

    try:
        make_session(smile_bundle / "model.onnx", SessionConfig(provider="cuda"))
    except OnnxEdgeError:
        pass  # no usable CUDA EP: what this test is about
    else:
        pytest.skip("the CUDA EP loads on this machine, so its rows are measured")
    report = json.loads((short_run[0] / "b.json").read_text())
    cuda = [r for r in report["rows"] if r["device"] == "cuda"]
    modes = {(r["engine"], r["mode"]) for r in cuda}
    assert {(ORT, E2E), (ORT, RESIDENT), (ORT, GRAPH), ("torch-eager", RESIDENT)} <= modes
    assert all(r["status"] == "skipped" and r["reason"] for r in cuda)
    assert all(r["stats"] is None for r in cuda)


# ------------------------------------------------------------------------------------------------
# Without torch; bad input


def test_peers_are_skipped_without_torch(smile_bundle, tmp_path):
    out = tmp_path / "b.json"
    result = run_without_torch(
        [
            "bench",
            smile_bundle,
            *SHORT,
            "--batch-sizes",
            "1",
            "--providers",
            "cpu",
            "--target",
            "onnxruntime/torch-eager>=3@1",
            "--json",
            out,
        ]
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    peers = [r for r in report["rows"] if r["family"] == PYTORCH]
    assert {r["engine"] for r in peers} == {"torch-eager", "torch-channels-last", "torch-compile"}
    assert all(r["status"] == "skipped" and "torch is not installed" in r["reason"] for r in peers)
    assert [r["status"] for r in report["rows"] if r["family"] == ORT] == ["ok"]
    assert report["versions"]["torch"] is None
    assert report["ratios"] == []
    assert (
        "NOT MEASURED | onnxruntime/torch-eager>=3@1 | torch-eager cpu end-to-end skipped"
        in result.stdout
    )


@pytest.mark.parametrize(
    "error",
    [
        OSError("libcudart.so.12: cannot open shared object file: No such file or directory"),
        ImportError("undefined symbol: cudaGetDriverEntryPoint"),
    ],
)
def test_peers_are_skipped_when_torch_is_installed_but_cannot_be_imported(
    smile_bundle, tmp_path, monkeypatch, error
):
    """A torch wheel without its native libraries (Jetson) raises OSError on import."""
    from onnxedge.runtime.bench import peers as bench_peers

    real_import = importlib.import_module

    def broken_import(name, *args, **kwargs):
        if name == "onnxedge.models.peers":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(bench_peers.importlib, "import_module", broken_import)
    out = tmp_path / "b.json"
    args = ["bench", str(smile_bundle), *SHORT, "--batch-sizes", "1", "--providers", "cpu"]
    args += ["--target", "onnxruntime/torch-eager>=3@1"]
    result = CliRunner().invoke(main, [*args, "--peers", "eager,compile", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    peers = [r for r in report["rows"] if r["family"] == PYTORCH]
    assert {r["engine"] for r in peers} == {"torch-eager", "torch-compile"}
    why = f"torch is installed but cannot be imported here: {type(error).__name__}: {error}"
    assert all(r["status"] == "skipped" and r["reason"] == why for r in peers)
    assert [r["status"] for r in report["rows"] if r["family"] == ORT] == ["ok"]
    assert (
        "NOT MEASURED | onnxruntime/torch-eager>=3@1 | torch-eager cpu end-to-end skipped"
        in result.output
    )


def test_plot_without_matplotlib_fails_before_running(smile_bundle, tmp_path):
    result = run_without_torch(["bench", smile_bundle, *SHORT, "--plot", tmp_path / "b.png"])
    assert result.returncode == 1
    assert result.stderr.strip().startswith("onnxedge: error: --plot needs matplotlib")
    assert "Traceback" not in result.stderr and not (tmp_path / "b.png").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--iters", "3", "--seconds", "1"], 2, "not both"),
        (["--batch-sizes", "0,8"], 2, "integers of at least 1"),
        (["--batch-sizes", "a"], 2, "comma-separated integers"),
        (["--peers", "jax"], 2, "unknown peer 'jax'"),
        (["--providers", "tpu"], 2, "unknown provider 'tpu'"),
        (["--seed", "-1"], 2, "expected a number at least 0, found -1"),
    ],
)
def test_usage_errors(smile_bundle, args, code, message):
    result = CliRunner().invoke(main, ["bench", str(smile_bundle), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_not_a_bundle_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "nothing"), *SHORT])
    assert result.exit_code == 1
    assert result.output.startswith("onnxedge: error: expected a bundle directory")
    assert len(result.output.strip().splitlines()) == 1


# The one reader (`Bundle.open`) refuses a manifest that misstates the model's input before bench
# looks at it; bench's own checks (`sample_shape`) are for models whose input it cannot feed.
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"dtype": "float16"},
            "the manifest says float16 array of shape [N, 3, 64, 64], the model has float32",
        ),
        (
            {"shape": ["batch", 3, "height", 64]},
            "the manifest says float32 array of shape [N, 3, N, 64], the model has float32 array "
            "of shape [N, 3, 64, 64]",
        ),
        ({"shape": ["batch"]}, "the manifest says float32 array of shape [N], the model has"),
    ],
)
def test_an_input_bench_cannot_feed_is_one_line(bundle_copy, change, message):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["input"].update(change)
    path.write_text(json.dumps(manifest))
    assert_one_line_error(CliRunner().invoke(main, ["bench", str(bundle_copy), *SHORT]), message)


def test_unwritable_output_fails_before_running(smile_bundle, tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(
        main, ["bench", str(smile_bundle), *SHORT, "--json", str(tmp_path / "file" / "b.json")]
    )
    assert result.exit_code == 1
    assert "is not a writable directory" in result.output


def test_nothing_measurable_is_an_error(smile_bundle, monkeypatch):
    from onnxedge.runtime.bench import run

    def no_ort(model, providers, **kw):
        info = EngineInfo(ORT, ORT, "cpu", E2E, "CPUExecutionProvider")
        return [SkippedEngine(info, "made unavailable by the test")]

    monkeypatch.setattr(run, "ort_engines", no_ort)
    args = ["bench", str(smile_bundle), *SHORT, "--peers", "none", "--engines", "onnxruntime"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "no engine could be measured" in result.output
    assert "made unavailable by the test" in result.output


# ------------------------------------------------------------------------------------------------
# The peers module (torch side), without timing


def _torch_threads() -> int:
    """The current count, so that build_peers' torch.set_num_threads changes nothing here."""
    import torch

    return torch.get_num_threads()


def test_peer_of_a_checkpoint_bundle_needs_the_checkpoint(smile_bundle):
    from onnxedge.models.peers import build_peers

    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    manifest["weights"] = {"source": "checkpoint", "path": "smile.safetensors", "sha256": "ab"}
    engines = build_peers(manifest, peers=["eager"], devices=["cpu"], threads=_torch_threads())
    assert len(engines) == 1 and isinstance(engines[0], SkippedEngine)
    assert "--checkpoint" in engines[0].reason


def test_peer_of_an_unknown_model_is_skipped(smile_bundle):
    from onnxedge.models.peers import build_peers

    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    manifest["model"] = "resnet_from_elsewhere"
    engines = build_peers(
        manifest, peers=["eager", "compile"], devices=["cpu"], threads=_torch_threads()
    )
    assert all(isinstance(e, SkippedEngine) and "registry" in e.reason for e in engines)


def test_compile_peer_without_a_compiler_is_skipped(smile_bundle, monkeypatch):
    from onnxedge.models import peers

    monkeypatch.setenv("CXX", "no-such-compiler-onnxedge")
    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    engines = peers.build_peers(
        manifest, peers=["eager", "compile"], devices=["cpu"], threads=_torch_threads()
    )
    by = {e.info.engine: e for e in engines}
    assert not isinstance(by["torch-eager"], SkippedEngine)
    assert isinstance(by["torch-compile"], SkippedEngine)
    assert "C++ compiler" in by["torch-compile"].reason


def test_seed_bundle_refuses_a_checkpoint(smile_bundle, tmp_path):
    from onnxedge.models.peers import build_peers

    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    with pytest.raises(OnnxEdgeError, match="weights come from seed"):
        build_peers(
            manifest, peers=["eager"], devices=["cpu"], threads=_torch_threads(), checkpoint="x.pt"
        )


def test_settings_reject_unknown_names():
    with pytest.raises(OnnxEdgeError, match="unknown peer"):
        BenchSettings(peers=("jax",))
    with pytest.raises(OnnxEdgeError, match="unknown execution provider"):
        BenchSettings(providers=("tpu",))
    with pytest.raises(OnnxEdgeError, match="expected --seed >= 0"):
        BenchSettings(seed=-1)


@pytest.mark.parametrize(("load", "warned"), [(0.1, False), (0.5, False), (1.8, True)])
def test_a_busy_machine_is_flagged(load, warned):
    from onnxedge.runtime.bench import BenchReport

    rows = (_row(ORT, "cpu", E2E, 1, 1.0), _row("torch-eager", "cpu", E2E, 1, 3.0))
    report = BenchReport(
        bundle={"model": "m"},
        settings=BenchSettings(threads=2),
        machine={"cpu": "test", "usable_cores": 2, "load_average_before": [load, 0.0, 0.0]},
        versions={},
        date="2026-01-01T00:00:00+00:00",
        command="onnxedge bench x",
        engines=(),
        rows=rows,
    )
    assert bool(report.warnings) == warned
    assert ("**Warning:** the machine was busy" in render_markdown(report)) == warned
    assert report.to_dict()["warnings"] == report.warnings
    for warning in report.warnings:
        # What was seen on one machine is cited as such, not printed as a finding of this run.
        assert "than ONNX Runtime's pool here" not in warning
        assert "not comparable with a quiet run" in warning and "docs/BENCHMARKS.md" in warning
        assert len(f"onnxedge: warning: {warning}") <= 200  # docs/CLI.md's limit


def test_tf32_loosens_the_output_check_only_when_asked():
    assert BenchSettings().check_atol == pytest.approx(1e-4)
    assert BenchSettings(tf32=True).check_atol == pytest.approx(1e-2)
