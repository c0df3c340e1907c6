"""`BenchSettings`, `TuneSettings` and `TimingPlan` from the library API, given a value of the
wrong kind: an `ArgumentError` naming the field, what it expected and what it found, where a str
of names was read letter by letter ("unknown engine 'o'", "no 'i' variant") and a number given as
a str or a single thread count was a TypeError from a comparison or a loop."""

from __future__ import annotations

import re

import pytest

from onnxedge.runtime import ArgumentError
from onnxedge.runtime.bench import BenchSettings, TimingPlan
from onnxedge.runtime.tune import TuneSettings

NAMES = "expected a sequence of names (str), such as a list"
INTS = "expected a sequence of integers, such as (1, 64)"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engines": "onnxruntime"}, f"engines: {NAMES}, found 'onnxruntime'"),
        ({"variants": "int8"}, f"variants: {NAMES}, found 'int8'"),
        ({"threads": 2}, f"threads: {INTS}, found 2"),
        ({"batch_sizes": "64"}, f"batch_sizes: {INTS}, found '64'"),
        ({"batch_sizes": (1.5,)}, f"batch_sizes: {INTS}, found (1.5,)"),
        ({"seconds": "1"}, "seconds: expected a number, found '1'"),
        ({"rounds": 2.5}, "rounds: expected an integer, found 2.5"),
        ({"seed": True}, "seed: expected an integer, found True"),
        ({"images": "faces/"}, "images: expected a sequence, such as a list, found 'faces/'"),
    ],
)
def test_tune_settings_name_the_field_of_the_wrong_kind(fields, message):
    with pytest.raises(ArgumentError, match=f"^{re.escape(message)}$"):
        TuneSettings(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"providers": "cpu"}, f"providers: {NAMES}, found 'cpu'"),
        ({"engines": "openvino"}, f"engines: {NAMES}, found 'openvino'"),
        ({"images_decodes": "fast"}, f"images_decodes: {NAMES}, found 'fast'"),
        ({"batch_sizes": [1, "8"]}, f"batch_sizes: {INTS}, found [1, '8']"),
        ({"threads": "2"}, "threads: expected an integer, found '2'"),
        ({"atol": "1e-4"}, "atol: expected a number, found '1e-4'"),
    ],
)
def test_bench_settings_name_the_field_of_the_wrong_kind(fields, message):
    plan = TimingPlan(iters=3, seconds=None)
    with pytest.raises(ArgumentError, match=f"^{re.escape(message)}$"):
        BenchSettings(plan=plan, tuned={}, **fields)


def test_timing_plan_names_the_field_of_the_wrong_kind():
    with pytest.raises(ArgumentError, match=r"^iters: expected an integer, found '3'$"):
        TimingPlan(iters="3", seconds=None)
    with pytest.raises(ArgumentError, match=r"^warmup: expected an integer, found 1.0$"):
        TimingPlan(warmup=1.0)


def test_settings_of_the_right_kinds_still_build():
    """Lists as well as tuples, None where a field may be None, numpy-free plain numbers."""
    assert TuneSettings(engines=["onnxruntime"], threads=None, batch_sizes=[1, 64]).batch_sizes
    plan = TimingPlan(iters=3, seconds=None)
    assert BenchSettings(plan=plan, tuned={}, providers=["cpu"], engines=None, threads=None)
