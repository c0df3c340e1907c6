"""The zoo runner (`make zoo`) on a tiny entry: every step timed and figured in its row, and an
entry that fails is a FAILED row with its reason while the table is still written."""

from __future__ import annotations

from onnxedge.export import zoo


def test_a_zoo_row_and_a_failed_one(tmp_path, monkeypatch):
    tiny = zoo.ZooEntry(
        "tiny_se",
        "onnxedge.models.families:squeeze_excite",
        (3, 32, 32),
        "SE blocks",
        args=(("width", 4),),
    )
    row = zoo.run_entry(tiny, "dynamo", 18, tmp_path, lambda _msg: None)
    assert row.status == "passed", row.reason
    assert set(row.seconds) == {"build", "export", "check", "parity", "bench"}
    assert row.pool_before == "ReduceMean" and row.pool_after == "GlobalAveragePool"
    assert row.global_means == 1  # the head's: the three SE blocks' means stay ReduceMean
    assert row.max_error_vs_torch is not None and row.max_error_vs_torch < 1e-5
    assert row.parity_logits is not None and row.p50_ms is not None and row.p50_ms > 0
    # the bundle can be checked against its model live: the factory and its arguments recorded
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    live = CliRunner().invoke(
        main,
        ["parity", str(tmp_path / "tiny_se-dynamo"), "--reference", "live", "--providers", "cpu"],
    )
    assert live.exit_code == 0, live.output

    broken = zoo.ZooEntry("broken", "onnxedge.models.families:no_such_net", (3, 32, 32), "none")
    failed = zoo.run_entry(broken, "dynamo", 18, tmp_path, lambda _msg: None)
    assert failed.status == "failed" and failed.reason.startswith("build: ")

    text = zoo.render([row, failed], command="zoo", machine="test CPU", date="2026-01-01")
    assert "| tiny_se | hand-written (SE blocks) | dynamo 18 | 3×32×32 |" in text
    assert "ReduceMean → GlobalAveragePool" in text
    assert "FAILED: build: " in text and "1 of 2 rows passed." in text

    # A parity failure names the batch and why (here: zero tolerances, so any rounding fails).
    from onnxedge.runtime import parity

    real = parity.run_parity
    zero = parity.ToleranceOverrides(atol=0.0, rtol=0.0, logit_atol=0.0, logit_rtol=0.0)
    monkeypatch.setattr(parity, "run_parity", lambda *a, **k: real(*a, **k, overrides=zero))
    strict = zoo.run_entry(tiny, "dynamo", 18, tmp_path / "strict", lambda _msg: None)
    assert strict.status == "failed" and strict.reason.startswith("parity: 0 passed, ")
    assert "; batch " in strict.reason and "outside the tolerance" in strict.reason
