"""int8 on CPUs without VNNI: which CPUs add int8 products in pairs into 16 bits, which variants
were quantised before the image's convolution got 7-bit weights, and the warning where the two
meet (`Classifier.from_bundle`, `onnxedge parity --variant`); docs/VARIANTS.md, "int8 on x86
CPUs without VNNI"."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_optimize import data, edge, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.bundle.reader import MANIFEST
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.cpu import int8_pairs_saturate
from onnxedge.runtime.variants.manifest import VariantEntry, made_with_8_bit_image_conv

ZEN2 = "fpu sse4_2 avx fma avx2 sha_ni"  # AMD EPYC Zen 2: AVX2 only


@pytest.mark.parametrize(
    ("flags", "machine", "saturates"),
    [
        (ZEN2, "x86_64", True),
        (ZEN2 + " avx512f avx512_vnni", "x86_64", False),
        (ZEN2 + " avx_vnni", "AMD64", False),
        (ZEN2 + " amx_int8", "x86_64", False),
        ("fp asimd asimddp", "aarch64", False),  # Arm: its dot product adds in 32 bits
        ("", "x86_64", False),  # flags unknown: no claim
    ],
)
def test_which_cpus_add_int8_products_in_pairs_into_16_bits(flags, machine, saturates):
    assert int8_pairs_saturate(flags.split(), machine) is saturates


def _entry(name: str, made: dict | None, origin: str = "model.onnx", precision: str = "int8"):
    block = {"from": origin, **({"made": made} if made is not None else {})}
    return VariantEntry(name, f"variants/{name}.onnx", "onnx", precision, ("cpu",), True, block)


OLD = {"quant_format": "QDQ"}
NEW = {"quant_format": "QDQ", "weights_7_bit": ["conv1.weight"]}


def test_a_quantisation_without_7_bit_weights_is_found_through_what_it_was_made_from():
    old = {"int8": _entry("int8", OLD), "int8-u8": _entry("int8-u8", {}, "int8")}
    old["int8-ort"] = _entry("int8-ort", {"method": "ort format"}, "int8")
    assert all(made_with_8_bit_image_conv(old, name) for name in old)
    new = {"int8": _entry("int8", NEW), "int8-u8": _entry("int8-u8", {}, "int8")}
    assert not any(made_with_8_bit_image_conv(new, name) for name in new)
    assert not made_with_8_bit_image_conv(old, None)  # fp32
    fp = {"fp16": _entry("fp16", {"method": "float16"}, precision="fp16")}
    assert not made_with_8_bit_image_conv(fp, "fp16")
    orphan = {"int8-u8": _entry("int8-u8", {}, "int8")}  # its int8 is not in the bundle
    assert not made_with_8_bit_image_conv(orphan, "int8-u8")
    loop = {"a": _entry("a", {}, "b"), "b": _entry("b", {}, "a")}
    assert not made_with_8_bit_image_conv(loop, "a")


@pytest.mark.parametrize(
    ("weights_7_bit", "eight_bit"),
    [("none", True), ([], False), ("all", False), (["conv1.weight"], False)],
)
def test_an_int8_made_with_8_bit_image_conv_weights_by_request_is_found(weights_7_bit, eight_bit):
    """``--int8-7-bit-weights none`` records "none" where the image's conv is quantised (its 8
    bits may saturate), ``[]`` where that conv stayed float (nothing to saturate)."""
    made = {"quant_format": "QDQ", "weights_7_bit": weights_7_bit}
    variants = {"int8": _entry("int8", made), "int8-u8": _entry("int8-u8", {}, "int8")}
    assert made_with_8_bit_image_conv(variants, "int8") is eight_bit
    assert made_with_8_bit_image_conv(variants, "int8-u8") is eight_bit


@pytest.fixture
def old_edge(edge: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The edge bundle as an onnxedge before the 7-bit image conv wrote it (its int8's made
    block without ``weights_7_bit``)."""
    bundle = tmp_path / "old_edge"
    shutil.copytree(edge, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["variants"]["int8"]["made"]["weights_7_bit"]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    return bundle


def test_the_classifier_warns_where_an_old_int8_runs_on_such_a_cpu(
    old_edge,
    edge,  # noqa: F811
    monkeypatch,
    caplog,
):
    from onnxedge.runtime.classifier import loader

    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(loader, "int8_pairs_saturate", lambda: True)
    for variant in ("int8", "int8-ort"):
        caplog.clear()
        Classifier.from_bundle(old_edge, provider="cpu", variant=variant)
        assert f"the {variant} variant was quantised with 8-bit weights" in caplog.text
        assert "--int8 --force" in caplog.text
    caplog.clear()
    Classifier.from_bundle(old_edge, provider="cpu")  # fp32
    Classifier.from_bundle(edge, provider="cpu", variant="int8")  # 7 bits
    monkeypatch.setattr(loader, "int8_pairs_saturate", lambda: False)
    Classifier.from_bundle(old_edge, provider="cpu", variant="int8")  # a CPU with VNNI
    assert "8-bit weights" not in caplog.text


def test_parity_of_an_old_int8_on_such_a_cpu_says_so(old_edge, monkeypatch, caplog):
    from onnxedge.runtime.classifier import loader

    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(loader, "int8_pairs_saturate", lambda: True)
    args = ["parity", str(old_edge), "--variant", "int8", "--providers", "cpu"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "the int8 variant was quantised with 8-bit weights" in caplog.text
    caplog.clear()
    monkeypatch.setattr(loader, "int8_pairs_saturate", lambda: False)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "8-bit weights" not in caplog.text


def test_a_weight_quantised_per_tensor_is_not_a_warning_but_others_are(caplog):
    """onnxruntime warns once per 1-D weight it quantises per tensor (every unfused BatchNorm of a
    DenseNet): 11 lines of `optimize` a user can do nothing about; they go to the debug log."""
    import logging

    from onnxedge.runtime.variants.quantize import _quiet_quantizer

    quiet = caplog.at_level(logging.DEBUG, logger="onnxedge.runtime.variants.quantize")
    with caplog.at_level(logging.DEBUG), quiet, _quiet_quantizer():
        logging.warning("Axis 1 is out-of-range for weight 'features.4.bn1.weight' with rank 1")
        logging.warning("something else the quantiser says")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["something else the quantiser says"]
    assert any("quantised per tensor" in r.getMessage() for r in caplog.records)
    logging.warning("Axis 1 is out-of-range for weight 'w' with rank 1")  # outside: as it is
    assert caplog.records[-1].levelno == logging.WARNING
