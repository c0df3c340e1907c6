"""How golden data is stored: deflated, each distinct input row once (inputs of 8-bit images as
their levels), golden layers on the golden data's inputs instead of a copy; read back bit for bit
what was written, a bundle written the old way (format version 1) read the same, a newer version
refused in one line; and the default bundle at most three times its model."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from test_classifier import rehash

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    GOLDEN,
    golden_inputs,
    golden_npz_bytes,
    load_golden,
)
from onnxedge.runtime.parity.layers import GOLDEN_LAYERS, load_golden_layers
from onnxedge.runtime.parity.npz import from_levels, level_arrays, npz_bytes, read_npz
from onnxedge.runtime.parity.reference import Reference, canonical_json


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_reference(a: Reference, b: Reference) -> None:
    """Every array and field the golden reader returns, bit for bit."""
    assert a.batch_sizes == b.batch_sizes and a.preprocessing == b.preprocessing
    assert (a.logits_name, a.seed) == (b.logits_name, b.seed)
    for size in a.batch_sizes:
        x, y = a.batches[size], b.batches[size]
        assert x.kinds == y.kinds
        for field in ("inputs", "prob", "logits", "prob_f32", "logits_f32"):
            assert same_bits(getattr(x, field), getattr(y, field)), (size, field)


def assert_same_layers(a, b) -> None:
    assert a.tensors == b.tensors and a.batch_sizes == b.batch_sizes
    for size in a.batch_sizes:
        assert same_bits(a.inputs[size], b.inputs[size])
        assert a.batches[size].keys() == b.batches[size].keys()
        for tensor, array in a.batches[size].items():
            assert same_bits(array, b.batches[size][tensor]), (size, tensor)


def replace_file(bundle: Path, name: str, data: bytes) -> None:
    (bundle / name).write_bytes(data)
    rehash(bundle, name)


def meta_of(path: Path) -> dict:
    return json.loads(read_npz(path)["meta"].tobytes())


def write_version_1(bundle: Path) -> None:
    """Rewrite the bundle's golden files as an onnxedge of format version 1 wrote them:
    uncompressed, ``inputs_bN`` for every batch, the layers with their own ``inputs_bN``."""
    opened = Bundle.open(bundle)
    reference, layers = load_golden(opened), load_golden_layers(opened)
    meta = {**meta_of(bundle / GOLDEN), "format_version": 1}
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(canonical_json(meta), np.uint8)}
    for size in reference.batch_sizes:
        b = reference.batches[size]
        arrays[f"inputs_b{size}"] = b.inputs
        arrays[f"kinds_b{size}"] = np.asarray(b.kinds, dtype=np.str_)
        for what in ("prob", "logits"):
            arrays[f"{what}_b{size}_f64"] = getattr(b, what)
            arrays[f"{what}_b{size}_f32"] = getattr(b, f"{what}_f32")
    replace_file(bundle, GOLDEN, npz_bytes(arrays, compress=False))
    meta = {**meta_of(bundle / GOLDEN_LAYERS), "format_version": 1}
    arrays = {"meta": np.frombuffer(canonical_json(meta), np.uint8)}
    for size in layers.batch_sizes:
        arrays[f"inputs_b{size}"] = layers.inputs[size]
        for i, tensor in enumerate(layers.tensors):
            arrays[f"t{i}_b{size}"] = layers.batches[size][tensor]
    replace_file(bundle, GOLDEN_LAYERS, npz_bytes(arrays, compress=False))


def test_golden_data_reads_back_bit_for_bit_what_was_written(bundle_copy):
    from onnxedge.export.golden import compute_reference
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    spec = get_model_spec("smile_cnn")
    module, _ = seeded(spec.build, 0)
    logits = json.loads((bundle_copy / "manifest.json").read_text())["golden"]["logits"]
    written = compute_reference(
        module, spec.preprocessing, batch_sizes=DEFAULT_BATCH_SIZES, logits_name=logits
    )
    replace_file(bundle_copy, GOLDEN, golden_npz_bytes(written, meta_of(bundle_copy / GOLDEN)))
    assert_same_reference(load_golden(Bundle.open(bundle_copy)), written)


def test_each_input_row_is_stored_once_and_the_layers_hold_no_inputs(smile_bundle):
    arrays = read_npz(smile_bundle / GOLDEN)
    assert meta_of(smile_bundle / GOLDEN)["format_version"] == 2
    assert arrays["inputs_codes"].shape == (64, 3, 64, 64)  # batch 64's rows; the rest refer
    assert arrays["inputs_codes"].dtype == np.uint8 and arrays["inputs_levels"].shape == (3, 256)
    assert [arrays[f"rows_b{n}"].tolist() for n in (1, 2, 7)] == [[5], [0, 5], list(range(7))]
    assert arrays["rows_b64"].tolist() == list(range(64))
    assert not [k for k in arrays if k.startswith("inputs_b")]
    layers = read_npz(smile_bundle / GOLDEN_LAYERS)
    assert not [k for k in layers if k.startswith("inputs")]
    assert meta_of(smile_bundle / GOLDEN_LAYERS)["format_version"] == 2
    golden = load_golden(Bundle.open(smile_bundle))
    stored = load_golden_layers(Bundle.open(smile_bundle))
    for size in stored.batch_sizes:
        assert same_bits(stored.inputs[size], golden.batches[size].inputs)


def test_the_random_rows_of_every_batch_are_rows_of_the_largest():
    spec = {"resize": [16, 16]}
    largest, _ = golden_inputs(64, spec)
    for size in (1, 2, 7, 20):
        inputs, kinds = golden_inputs(size, spec)
        rows = [r for r, kind in enumerate(kinds) if kind == "random"]
        first = 64 - 59  # the structured rows come first in both
        np.testing.assert_array_equal(inputs[rows], largest[first : first + len(rows)])


def test_a_bundle_written_the_old_way_reads_the_same(bundle_copy, smile_bundle):
    write_version_1(bundle_copy)
    (size,) = meta_of(bundle_copy / GOLDEN_LAYERS)["batch_sizes"]
    assert f"inputs_b{size}" in read_npz(bundle_copy / GOLDEN_LAYERS)
    assert meta_of(bundle_copy / GOLDEN)["format_version"] == 1
    old, new = Bundle.open(bundle_copy), Bundle.open(smile_bundle)
    assert_same_reference(load_golden(old), load_golden(new))
    assert_same_layers(load_golden_layers(old), load_golden_layers(new))


def test_a_newer_format_is_refused_in_one_line_naming_the_versions(bundle_copy):
    arrays = read_npz(bundle_copy / GOLDEN)
    arrays["meta"] = np.frombuffer(
        canonical_json({**meta_of(bundle_copy / GOLDEN), "format_version": 3}), np.uint8
    )
    replace_file(bundle_copy, GOLDEN, npz_bytes(arrays))
    with pytest.raises(BundleError) as e:
        load_golden(Bundle.open(bundle_copy))
    assert str(e.value) == (
        f"{bundle_copy / GOLDEN}: expected golden data of format 'onnxedge-golden' version 1 or "
        "2, found 'onnxedge-golden' version 3 (written by a newer onnxedge; upgrade onnxedge to "
        "read it)"
    )


def altered(bundle: Path, name: str, change: Mapping[str, np.ndarray | None]) -> None:
    arrays = read_npz(bundle / name)
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    replace_file(bundle, name, npz_bytes(arrays))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows_b7": np.arange(1, 8, dtype=np.int32) * 10}, "'rows_b7' should number rows 0 to"),
        ({"rows_b7": None}, "lacks 'rows_b7' with 7 row numbers"),
        ({"inputs_codes": None}, "expected inputs_codes (uint8 [N, C, ...]) and inputs_levels"),
        ({"inputs_levels": np.zeros((3, 2), np.float32)}, "K above every code"),
        ({"inputs_codes": None, "inputs_levels": None}, "lacks its input rows"),
    ],
)
def test_golden_rows_that_do_not_fit_are_refused(bundle_copy, change, message):
    altered(bundle_copy, GOLDEN, change)
    with pytest.raises(BundleError, match=re.escape(message)):
        load_golden(Bundle.open(bundle_copy))


def test_golden_layers_of_a_batch_the_golden_data_lacks_are_refused(bundle_copy):
    arrays = read_npz(bundle_copy / GOLDEN_LAYERS)
    meta = meta_of(bundle_copy / GOLDEN_LAYERS)
    (size,) = meta["batch_sizes"]
    arrays = {k.replace(f"_b{size}", "_b3"): v for k, v in arrays.items()}
    arrays["meta"] = np.frombuffer(canonical_json({**meta, "batch_sizes": [3]}), np.uint8)
    replace_file(bundle_copy, GOLDEN_LAYERS, npz_bytes(arrays))
    with pytest.raises(BundleError, match="layers of batch 3, whose inputs the golden data lacks"):
        load_golden_layers(Bundle.open(bundle_copy))


def test_levels_keep_every_bit_and_fall_back_where_a_channel_has_too_many():
    x = np.zeros((2, 2, 3, 3), dtype=np.float32)
    x[0, 0, 0, 0] = -0.0
    x[0, 1] = np.frombuffer(np.uint32(0x7FC00001).tobytes(), np.float32)[0]  # a NaN's payload
    x[1, 1, 2, 2] = 1e-45  # a denormal
    stored = level_arrays("x", x)
    assert sorted(stored) == ["x_codes", "x_levels"]
    assert same_bits(from_levels(Path("f.npz"), stored, "x"), x)
    many = np.random.default_rng(0).random((2, 1, 17, 17), dtype=np.float32)  # 578 values
    assert sorted(level_arrays("x", many)) == ["x"]
    assert same_bits(from_levels(Path("f.npz"), level_arrays("x", many), "x"), many)
    assert from_levels(Path("f.npz"), {}, "x") is None


def test_the_default_bundle_is_at_most_three_times_its_model(smile_bundle):
    files = json.loads((smile_bundle / "manifest.json").read_text())["files"]
    total = sum(p.stat().st_size for p in smile_bundle.iterdir())
    assert sorted(files) == sorted([GOLDEN, GOLDEN_LAYERS, "model.onnx"])
    assert total <= 3 * (smile_bundle / "model.onnx").stat().st_size


def test_the_float32_spread_is_stored_and_a_malformed_one_refused(bundle_copy):
    """The export ran PyTorch's float32 module with several kernels; the largest error over
    them is in the golden meta, at least the default run's, and read back; golden data made
    before it reads as None; anything else is refused in one line."""
    reference = load_golden(Bundle.open(bundle_copy))
    spread = reference.float32_spread
    assert spread is not None and len(spread["runs"]) >= 4 and spread["runs"][0] == "default"
    for output in ("prob", "logits"):
        default = max(
            float(np.abs(getattr(b, f"{output}_f32") - getattr(b, output)).max())
            for b in reference.batches.values()
        )
        assert spread[output] >= default > 0
    arrays = read_npz(bundle_copy / GOLDEN)
    meta = meta_of(bundle_copy / GOLDEN)
    for value, ok in ((None, True), ({"prob": -1, "logits": 0}, False), ("big", False)):
        changed = {k: v for k, v in meta.items() if k != "float32_spread"}
        if value is not None:
            changed["float32_spread"] = value
        arrays["meta"] = np.frombuffer(canonical_json(changed), np.uint8)
        replace_file(bundle_copy, GOLDEN, npz_bytes(arrays))
        if ok:
            assert load_golden(Bundle.open(bundle_copy)).float32_spread is None
        else:
            with pytest.raises(BundleError, match="expected float32_spread as"):
                load_golden(Bundle.open(bundle_copy))
