"""`--model module:factory` and `--model path/to/file.py:factory`: the factory is found, called with
literal `--model-arg` values, and every way it can go wrong is one line naming what was expected."""

from __future__ import annotations

import os
import textwrap

import pytest
from torch import nn

from onnxedge.models.loader import (
    build_module,
    is_factory_reference,
    load_factory,
    parse_model_args,
)
from onnxedge.runtime.errors import OnnxEdgeError

USER_FILE = """
import torch
from torch import nn

from helper_layers import Head  # a sibling module: the file's folder is on sys.path

def tiny(num_classes=2, width=4):
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), Head(width, num_classes))

def not_a_module():
    return {"weights": 1}

def broken(**kwargs):
    raise ValueError("width must be even\\nsecond line")
"""

HELPER = """
from torch import nn

class Head(nn.Sequential):
    def __init__(self, width, classes):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
"""


@pytest.fixture
def user_file(tmp_path):
    (tmp_path / "helper_layers.py").write_text(textwrap.dedent(HELPER))
    path = tmp_path / "my_model.py"
    path.write_text(textwrap.dedent(USER_FILE))
    return path


def test_reference_forms():
    assert is_factory_reference("pkg.mod:f") and is_factory_reference("m.py:f")
    assert not is_factory_reference("smile_cnn")


def test_model_args_are_literals_or_strings():
    args = parse_model_args(["depth=18", "scale=0.5", "flag=True", "none=None", "name=tiny"])
    assert args == {"depth": 18, "scale": 0.5, "flag": True, "none": None, "name": "tiny"}
    assert parse_model_args(["sizes=(1, 2)", "quoted='a b'"]) == {"sizes": (1, 2), "quoted": "a b"}
    with pytest.raises(OnnxEdgeError, match="expected key=value with a Python name, found 'x'"):
        parse_model_args(["x"])
    with pytest.raises(OnnxEdgeError, match="'a' given twice"):
        parse_model_args(["a=1", "a=2"])


def test_a_module_factory_builds(user_file):
    module = build_module("onnxedge.models.families:depthwise_silu", {"num_classes": 3})
    assert isinstance(module, nn.Module) and module.classifier.out_channels == 3


def test_a_file_factory_builds_with_its_siblings_importable(user_file):
    module = build_module(f"{user_file}:tiny", {"num_classes": 5, "width": 6})
    assert isinstance(module, nn.Module) and module[2][2].out_features == 5


@pytest.mark.parametrize(
    "reference,args,message",
    [
        ("no_such_pkg.models:f", {}, r"cannot import 'no_such_pkg.models': ModuleNotFoundError"),
        ("onnxedge.models.families:resnet", {}, r"has no 'resnet'; it defines: .*convnext_like"),
        ("{file}:not_a_module", {}, r"returned a dict; expected a torch.nn.Module"),
        (
            "{file}:broken",
            {"width": 3},
            r"broken\(width=3\) raised ValueError at .*my_model.py:\d+: width must be even$",
        ),
        ("{file}:tiny", {"colour": "red"}, r"tiny\(colour='red'\) raised TypeError: .*colour"),
        ("{dir}/absent.py:f", {}, r"expected a Python file for --model, found nothing at"),
        (":f", {}, r"expected --model as a registered name or as module:factory"),
    ],
)
def test_each_failure_is_one_line(user_file, reference, args, message):
    reference = reference.format(file=user_file, dir=user_file.parent)
    with pytest.raises(OnnxEdgeError, match=message) as err:
        build_module(reference, args)
    assert "\n" not in str(err.value)


def test_a_file_that_fails_to_import_is_one_line(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(OnnxEdgeError, match=r"cannot import .*bad.py: RuntimeError: no GPU here"):
        load_factory(f"{path}:f")


def test_a_file_whose_name_is_not_utf8_loads(tmp_path):
    folder = tmp_path / os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8
    folder.mkdir()
    path = folder / os.fsdecode(b"m\xe9-1.py")
    path.write_text("from torch import nn\n\ndef f():\n    return nn.Linear(2, 1)\n")
    model = build_module(f"{path}:f", {})
    assert isinstance(model, nn.Linear)
    assert type(model).__module__ == "torch.nn.modules.linear"
    assert load_factory(f"{path}:f").__module__.startswith("onnxedge_user_m__1_")
