"""The seed model pins the article's shapes; checkpoints load strictly or are refused clearly."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from onnxedge.models import available_models, get_model_spec
from onnxedge.models.weights import load_checkpoint, read_state_dict, seeded
from onnxedge.runtime.errors import OnnxEdgeError

HEADS = ("avgpool", "adaptive", "mean")


def test_the_registry_lists_the_heads_smile_cnn_builds():
    from onnxedge.models import smile_cnn

    assert get_model_spec("smile_cnn").heads == smile_cnn.HEADS == HEADS


@pytest.mark.parametrize("head", HEADS)
def test_article_shapes(head):
    model = get_model_spec("smile_cnn").build(head).eval()
    x = torch.ones(4, 3, 64, 64)
    with torch.no_grad():
        assert tuple(model.backbone(x).shape) == (4, 256, 8, 8)
        assert tuple(model.pooled(x).shape) == (4, 256)
        out = model(x)
    assert tuple(out.shape) == (4, 1)
    assert torch.all((out > 0) & (out < 1))


def test_heads_compute_the_same_average():
    models = {h: seeded(lambda h=h: get_model_spec("smile_cnn").build(h), 3)[0] for h in HEADS}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        outs = [m.eval()(x) for m in models.values()]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])


def test_registry_lists_and_refuses():
    assert "smile_cnn" in available_models()
    with pytest.raises(OnnxEdgeError, match=r"unknown model 'resnet'; expected one of: smile_cnn"):
        get_model_spec("resnet")
    with pytest.raises(OnnxEdgeError, match=r"unknown head 'max'.*avgpool, adaptive, mean"):
        get_model_spec("smile_cnn").build("max")


def test_seeded_init_is_reproducible():
    build = get_model_spec("smile_cnn").build
    a, prov = seeded(build, 5)
    b, _ = seeded(build, 5)
    c, _ = seeded(build, 6)
    assert prov.to_dict() == {"source": "seed", "seed": 5}
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "nested"])
def test_checkpoint_round_trip(tmp_path, fmt):
    build = get_model_spec("smile_cnn").build
    trained, _ = seeded(build, 11)
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save({"model_state_dict": state} if fmt == "nested" else state, path)
    fresh, _ = seeded(build, 0)
    provenance = load_checkpoint(fresh, path)
    assert provenance.source == "checkpoint" and len(provenance.sha256) == 64
    assert provenance.format == ("safetensors" if fmt == "safetensors" else "state_dict")
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor)


def test_checkpoint_with_wrong_shape_names_layer_and_shapes(tmp_path):
    model, _ = seeded(get_model_spec("smile_cnn").build, 0)
    state = dict(model.state_dict())
    state["conv3.weight"] = torch.zeros(64, 64, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(OnnxEdgeError) as err:
        load_checkpoint(model, path)
    message = str(err.value)
    assert "'conv3.weight'" in message
    assert "[128, 64, 3, 3]" in message and "[64, 64, 3, 3]" in message


def test_checkpoint_with_missing_and_extra_keys(tmp_path):
    model, _ = seeded(get_model_spec("smile_cnn").build, 0)
    state = dict(model.state_dict())
    del state["fc.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(OnnxEdgeError, match=r"missing 'fc.bias' \(expected shape \[1\]\)"):
        load_checkpoint(model, tmp_path / "missing.pt")
    state = dict(model.state_dict(), extra=torch.zeros(1))
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(OnnxEdgeError, match=r"unexpected key 'extra'"):
        load_checkpoint(model, tmp_path / "extra.pt")


def test_full_pickle_is_refused(tmp_path):
    model = get_model_spec("smile_cnn").build()
    torch.save(model, tmp_path / "full.pt")  # a whole pickled module, not a state_dict
    with pytest.raises(OnnxEdgeError, match=r"found a pickle of other objects") as e:
        read_state_dict(tmp_path / "full.pt")
    message = str(e.value).replace(str(tmp_path / "full.pt"), "")
    assert "weights_only" not in message and len(message) <= 160


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        (
            {"epoch": 3, "weights": {}},
            "found a dict of 'epoch', 'weights'; put the tensors at the top or under "
            "'state_dict', 'model_state_dict' or 'model'",
        ),
        (
            [1, 2],
            "expected a state_dict mapping names to tensors, found list: save model.state_dict()",
        ),
    ],
)
def test_a_checkpoint_without_a_state_dict_says_where_the_tensors_belong(tmp_path, saved, expected):
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(OnnxEdgeError) as e:
        read_state_dict(tmp_path / "other.pt")
    assert str(e.value).endswith(expected)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran",))


def test_a_pickle_that_would_run_code_is_one_short_line_without_the_unsafe_advice(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    torch.save({"fc.weight": _RunsCode()}, "evil.pt")
    with pytest.raises(OnnxEdgeError) as e:
        read_state_dict("evil.pt")
    message = str(e.value)
    assert message == (
        "evil.pt: expected a state_dict or a .safetensors file, found a pickle of other objects "
        "(GLOBAL posix.system), not loaded: save model.state_dict()"
    )
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s.__setitem__("fc.weight", s["fc.weight"].to(torch.int64)),
            r"tensor 'fc.weight' is int64; expected floating point \(float32\)",
        ),
        (
            lambda s: s["conv1.weight"].view(-1)[:3].fill_(float("nan")),
            r"tensor 'conv1.weight' holds 3 NaN and 0 infinite values; expected finite weights",
        ),
        (
            lambda s: s["fc.bias"].fill_(float("-inf")),
            r"tensor 'fc.bias' holds 0 NaN and 1 infinite values",
        ),
    ],
    ids=["int64", "nan", "inf"],
)
def test_weights_that_are_not_finite_floats_are_named_before_export(tmp_path, change, message):
    model, _ = seeded(get_model_spec("smile_cnn").build, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    change(state)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(OnnxEdgeError, match=message):
        load_checkpoint(model, tmp_path / "bad.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(OnnxEdgeError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(OnnxEdgeError, match="found nothing at"):
        read_state_dict(tmp_path / "absent.pt")
