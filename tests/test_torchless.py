"""The runtime works where torch and the export side cannot be imported: `predict`, `check` and
the Python API, each in a subprocess with them blocked (`parity` from golden data:
tests/test_parity.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchless import run_python_without_torch, run_without_torch

from onnxedge.runtime.classifier.classifier import Classifier


def write_images(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, (mode, size) in enumerate([("RGB", (90, 70)), ("L", (64, 64)), ("RGBA", (50, 100))]):
        path = root / f"{i}.png"
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).convert(mode).save(path)
        paths.append(path)
    return paths


def test_the_blocker_blocks():
    """The helper is what the other tests rely on: prove that it can fail."""
    for module in ("torch", "torch.nn", "onnxsim", "onnxscript", "onnx_ir", "safetensors"):
        result = run_python_without_torch(f"import {module}")
        assert result.returncode == 1, module
        top = module.partition(".")[0]  # importing torch.nn imports torch first
        assert f"No module named {top!r} (blocked" in result.stderr, result.stderr
    result = run_python_without_torch(
        "import onnxruntime, onnx, numpy, PIL.Image, click, rich.progress; print('ok')"
    )
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_export_side_is_really_blocked_in_the_cli():
    """`onnxedge export` needs torch: under the blocker it must not run (an error, not a bundle)."""
    result = run_without_torch(["export", "--out", "/nonexistent/never"])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("onnxedge: error: onnxedge export needs torch, onnxscript, onnx_ir")
    assert "pip install 'onnxedge[export]'" in line


def test_predict_without_torch(smile_bundle, tmp_path):
    paths = write_images(tmp_path / "images")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = run_without_torch(["predict", smile_bundle, tmp_path / "images", "--json"])
    assert result.returncode == 1, result.stderr  # the broken file
    assert "Traceback" not in result.stderr
    # provider auto tried CUDA with ONNX Runtime's log muted: no "[E:onnxruntime..." lines
    assert "[E:onnxruntime" not in result.stderr and "[W:onnxruntime" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(p) for p in paths] + [
        str(tmp_path / "images" / "broken.jpg")
    ]
    assert "cannot decode the image" in records[-1]["error"]
    expected = Classifier.from_bundle(smile_bundle, provider="cpu").predict_images(paths)
    assert [r["probability"] for r in records[:-1]] == pytest.approx(
        [p.probability for p in expected], abs=1e-6
    )
    assert "4 files: 3 classified, 1 failed" in result.stderr


def test_check_without_torch(smile_bundle):
    result = run_without_torch(["check", smile_bundle])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED |") == 3


def test_python_api_without_torch(smile_bundle, tmp_path):
    paths = write_images(tmp_path)
    code = """
import json, sys
from onnxedge.runtime.classifier.classifier import Classifier

clf = Classifier.from_bundle(sys.argv[1], provider="cpu")
predictions = clf.predict_images(sys.argv[2:])
blocked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps({"p": [p.probability for p in predictions], "blocked": blocked}))
"""
    result = run_python_without_torch(code, [str(smile_bundle), *map(str, paths)])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["blocked"] == []
    expected = Classifier.from_bundle(smile_bundle, provider="cpu").predict_images(paths)
    assert out["p"] == pytest.approx([p.probability for p in expected], abs=1e-6)


def test_base_requirements_have_no_export_side():
    """`pip install onnxedge` (no extras) brings the runtime only; torch & co. are in [export]."""
    requirements = importlib.metadata.requires("onnxedge") or []
    names = {
        req: re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0].lower().replace("_", "-")
        for req in requirements
    }
    base = {name for req, name in names.items() if "extra ==" not in req}
    export = {name for req, name in names.items() if re.search(r"extra\s*==\s*['\"]export", req)}
    export_side = {"torch", "onnxsim", "onnxscript", "onnx-ir", "safetensors", "matplotlib"}
    assert base and not base & export_side, base
    assert export_side <= export, export
    assert {"numpy", "onnx", "pillow", "click"} <= base
    # The plain onnxruntime by default (a CPU-only device does not download the GPU build); the
    # GPU build only through the cuda extra.
    assert "onnxruntime" in base and "onnxruntime-gpu" not in base
    cuda = {name for req, name in names.items() if re.search(r"extra\s*==\s*['\"]cuda", req)}
    assert "onnxruntime-gpu" in cuda
