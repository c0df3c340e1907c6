"""`onnxedge pack`: a new bundle with only what a device needs (model, its external data,
variants, manifest, and the golden data unless --no-golden), every hash verified, written
atomically; and what parity and localize say on a bundle packed without golden data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from test_classifier import externalize, rehash
from test_localize import add_variant

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.pack import pack_bundle
from onnxedge.runtime.bundle.reader import MANIFEST, Bundle
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.parity import GOLDEN, load_golden
from onnxedge.runtime.parity.layer_reference import golden_layer_reference
from onnxedge.runtime.parity.layers import GOLDEN_LAYERS, NoGoldenLayers


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def predictions(bundle: Path, inputs_from: Path | None = None) -> list[float]:
    """The bundle's probabilities on the golden batch 7 of ``inputs_from`` (default: its own)."""
    inputs = load_golden(Bundle.open(inputs_from or bundle)).batches[7].inputs
    classifier = Classifier.from_bundle(bundle, provider="cpu")
    return [p.probability for p in classifier.predict_array(inputs)]


def test_a_packed_bundle_holds_the_listed_files_verifies_and_predicts(smile_bundle, tmp_path):
    out = tmp_path / "packed"
    result = invoke("pack", smile_bundle, "--out", out, "--json", tmp_path / "pack.json")
    assert result.exit_code == 0, result.output
    source = json.loads((smile_bundle / MANIFEST).read_text())
    packed = json.loads((out / MANIFEST).read_text())
    assert packed == source  # the same files, the same hashes, the same blocks
    assert sorted(p.name for p in out.iterdir()) == sorted([*source["files"], MANIFEST])
    for name in source["files"]:
        assert (out / name).read_bytes() == (smile_bundle / name).read_bytes()
    Bundle.open(out)
    assert predictions(out) == predictions(smile_bundle)
    parity = invoke("parity", out, "--providers", "cpu", "--batch-sizes", "1")
    assert parity.exit_code == 0, parity.output
    written = json.loads((tmp_path / "pack.json").read_text())
    assert written["golden"] is True and written["left_out"] == []
    assert written["total_bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert f"packed {smile_bundle} into {out}: {written['total_bytes']:,} bytes" in result.output


def test_no_golden_leaves_the_golden_data_and_parity_says_where_it_is(smile_bundle, tmp_path):
    out = tmp_path / "device"
    result = invoke("pack", smile_bundle, "--out", out, "--no-golden")
    assert result.exit_code == 0, result.output
    assert f"left out: {GOLDEN}, {GOLDEN_LAYERS}" in result.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["model.onnx"]
    assert manifest["golden"]["file"] is None and manifest["layers"]["golden"]["file"] is None
    assert manifest["layers"]["modules"]  # --localize --against needs the map, not golden data
    Bundle.open(out)
    assert predictions(out, inputs_from=smile_bundle) == predictions(smile_bundle)
    for extra in ([], ["--localize"], ["--localize", "--against", "cpu"]):
        parity = invoke("parity", out, "--providers", "cpu", *extra)
        assert_one_line_error(
            parity,
            f"{out} has no golden data: packed without it by onnxedge pack --no-golden from "
            f"{smile_bundle}; use that full bundle, which has it",
        )
    with pytest.raises(NoGoldenLayers, match="use that full bundle, which has it"):
        golden_layer_reference(Bundle.open(out))


def test_variants_and_external_data_travel_unlisted_files_do_not(bundle_copy, tmp_path):
    externalize(bundle_copy, "weights.bin")
    rehash(bundle_copy, "weights.bin")
    rehash(bundle_copy, "model.onnx")
    add_variant(bundle_copy, "int8", bundle_copy / "model.onnx")
    (bundle_copy / "parity.json").write_text("{}")  # a report beside the bundle: not listed
    made = pack_bundle(bundle_copy, tmp_path / "out", golden=False)
    assert sorted(made.files) == [MANIFEST, "model.onnx", "variants/int8.onnx", "weights.bin"]
    assert made.left_out == (GOLDEN, GOLDEN_LAYERS)
    assert not (tmp_path / "out" / "parity.json").exists()
    packed = Bundle.open(tmp_path / "out")
    assert packed.manifest["format_version"] == 2 and list(packed.variants) == ["int8"]
    assert packed.external_data == ("weights.bin",)
    packed.variant_model("int8")  # listed, verified, the manifest's input and output


def test_an_altered_file_is_not_packed(bundle_copy, tmp_path):
    data = bytearray((bundle_copy / GOLDEN).read_bytes())
    data[-10] ^= 1
    (bundle_copy / GOLDEN).write_bytes(bytes(data))
    result = invoke("pack", bundle_copy, "--out", tmp_path / "out")
    assert_one_line_error(result, f"{bundle_copy / GOLDEN} does not match the manifest")
    assert not (tmp_path / "out").exists()
    # Left behind, it is not read: --no-golden packs the rest.
    assert invoke("pack", bundle_copy, "--out", tmp_path / "out", "--no-golden").exit_code == 0


def test_an_existing_out_needs_force_and_the_bundle_itself_is_refused(smile_bundle, tmp_path):
    out = tmp_path / "out"
    assert invoke("pack", smile_bundle, "--out", out, "--no-golden").exit_code == 0
    again = invoke("pack", smile_bundle, "--out", out)
    assert_one_line_error(again, f"--out {out}: expected a new or empty directory")
    assert not (out / GOLDEN).exists()
    forced = invoke("pack", smile_bundle, "--out", out, "--force")
    assert forced.exit_code == 0, forced.output
    assert sha256_file(out / GOLDEN) == sha256_file(smile_bundle / GOLDEN)
    other = tmp_path / "other"
    (other / "notes").mkdir(parents=True)
    assert_one_line_error(
        invoke("pack", smile_bundle, "--out", other, "--force"), "refusing to overwrite"
    )
    with pytest.raises(OnnxEdgeError, match="expected another directory than the bundle"):
        pack_bundle(smile_bundle, smile_bundle, force=True)


def test_a_bundle_packed_without_golden_data_packs_again_and_keeps_its_reason(
    smile_bundle, tmp_path
):
    first = pack_bundle(smile_bundle, tmp_path / "a", golden=False)
    second = pack_bundle(first.out, tmp_path / "b", golden=False)
    assert second.left_out == ()
    reason = json.loads((tmp_path / "b" / MANIFEST).read_text())["golden"]["reason"]
    assert f"from {smile_bundle};" in reason
    with pytest.raises(BundleError, match="has no golden data"):
        load_golden(Bundle.open(tmp_path / "b"))


def test_an_empty_out_folder_takes_the_bundle_without_force(smile_bundle, tmp_path):
    """What the docs' --force row says of pack: an empty folder holds nothing to replace."""
    out = tmp_path / "empty"
    out.mkdir()
    result = invoke("pack", smile_bundle, "--out", out, "--no-golden")
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()
