"""The import zoo (`make import-zoo`) on tiny entries: a model exported by torch itself at batch
1 goes through import and parity into a PASSED row with what import did; a model import refuses,
a parity failure and a broken factory are FAILED rows with their reasons, and the table says so."""

from __future__ import annotations

import numpy as np

from onnxedge.export import import_zoo
from onnxedge.export.zoo import ZooEntry

TINY = ZooEntry(
    "tiny_se",
    "onnxedge.models.families:squeeze_excite",
    (3, 32, 32),
    "SE blocks",
    args=(("width", 4),),
)
RESNET = ZooEntry("resnet18", "pytorchcv.models.resnet:resnet18", (3, 224, 224), "residual")
MIXER = '''
import torch


class Mixer(torch.nn.Module):
    """Subtracts the batch's mean image: no rewrite can free that batch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x - x.mean(0, keepdim=True))
        return self.fc(x.mean((2, 3)))


def mixer():
    return Mixer()
'''


PREACT = '''
import torch


class PreAct(torch.nn.Module):
    """A pre-activation block (BatchNorm, ReLU, then the convolution), as PreResNet's: the
    torchscript exporter folds a BatchNorm into the convolution before it, so one after a sum
    (a residual block's output, as here) stays a BatchNormalization node."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 3)
        with torch.no_grad():  # running statistics a trained network would have
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = self.conv(x)
        y = y + self.conv2(torch.relu(self.bn(y + 0.5)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def preact():
    return PreAct()
'''


def _quiet(_msg: str) -> None:
    pass


def test_a_model_exported_at_batch_1_is_imported_and_passes_parity(tmp_path):
    row = import_zoo.run_entry(TINY, "dynamo", 18, tmp_path, _quiet)
    assert row.status == "passed", row.reason
    assert set(row.seconds) == {"build", "export", "import", "parity"}
    # torch traced it at batch 1: the flatten before the classifier pinned it, import freed it
    assert row.batch_rewrites >= 1
    assert "-> GlobalAveragePool" in row.head  # the head's mean, lowered
    assert row.reference == "float64"  # a tiny model fits the float64 budget (no reason given)
    assert row.parity_logits is not None and row.parity_logits < 1e-4

    text = import_zoo.render([row], command="import-zoo", machine="test CPU", date="2026-01-01")
    assert "| tiny_se | SE blocks | dynamo 18 | " in text and "| PASSED |" in text
    assert "1 of 1 rows passed." in text


def test_an_older_torch_export_with_batch_norm_passes_parity(tmp_path):
    """torch.onnx.export at opset 11 writes BatchNormalization-9, which onnx's own reference
    kernel ran as training (the batch's statistics blended in): pytorchcv's PreResNet-18 so
    exported failed parity at every batch (labels 8 of 64 agreed) on a healthy graph."""
    import onnx

    (tmp_path / "preact.py").write_text(PREACT)
    entry = ZooEntry("preact", f"{tmp_path / 'preact.py'}:preact", (3, 16, 16), "pre-activation")
    row = import_zoo.run_entry(entry, "torchscript", 11, tmp_path / "out", _quiet)
    assert row.status == "passed", row.reason
    assert row.reference == "float64"
    exported = onnx.load(str(tmp_path / "out" / "preact-torchscript.onnx"))
    assert "BatchNormalization" in {n.op_type for n in exported.graph.node}
    assert exported.opset_import[0].version == 11
    # The float64 reference is the file's computation: ONNX Runtime's float32 run is within
    # rounding of it (onnx's own kernel put it about 1e-2 away, and parity's bound, measured
    # against the reference, widened to let it through).
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity import load_golden

    batch = load_golden(Bundle.open(tmp_path / "out" / "preact-torchscript")).batch(7)
    np.testing.assert_allclose(batch.logits, batch.logits_f32, rtol=1e-4, atol=1e-5)


def test_a_refusal_a_false_alarm_and_a_broken_factory_are_failed_rows(tmp_path, monkeypatch):
    (tmp_path / "mixer.py").write_text(MIXER)
    mixing = ZooEntry("mixer", f"{tmp_path / 'mixer.py'}:mixer", (3, 16, 16), "batch mean")
    refused = import_zoo.run_entry(mixing, "torchscript", 17, tmp_path / "out", _quiet)
    assert refused.status == "failed"
    assert refused.reason.startswith("import: the input's batch is fixed at 1 and cannot be made")

    broken = ZooEntry("broken", "onnxedge.models.families:no_such_net", (3, 32, 32), "none")
    failed = import_zoo.run_entry(broken, "dynamo", 18, tmp_path / "out", _quiet)
    assert failed.status == "failed" and failed.reason.startswith("build: ")

    # parity at zero tolerances: any rounding fails, and the row names the batch and why
    from onnxedge.runtime import parity

    real = parity.run_parity
    zero = parity.ToleranceOverrides(atol=0.0, rtol=0.0, logit_atol=0.0, logit_rtol=0.0)
    monkeypatch.setattr(parity, "run_parity", lambda *a, **k: real(*a, **k, overrides=zero))
    strict = import_zoo.run_entry(TINY, "dynamo", 18, tmp_path / "strict", _quiet)
    assert strict.status == "failed" and strict.reason.startswith("parity: 0 passed, ")
    assert "; batch " in strict.reason

    text = import_zoo.render([refused, failed, strict], command="c", machine="m", date="2026-01-01")
    assert "FAILED: import: the input's batch is fixed at 1" in text
    assert "FAILED: build: " in text and "0 of 3 rows passed." in text


def test_the_command_writes_the_table_and_exits_1_on_a_failed_row(tmp_path, monkeypatch):
    monkeypatch.setattr(import_zoo, "IMPORT_ZOO", (TINY,))
    out = tmp_path / "IMPORT_ZOO.md"
    code = import_zoo.main(["--out", str(out), "--bundles", str(tmp_path / "b")])
    assert code == 0 and "2 of 2 rows passed." in out.read_text()  # dynamo and torchscript
    assert "- command: `python -m onnxedge.export.import_zoo --out " in out.read_text()

    def fails(entry, exporter, opset, bundles, say):
        return import_zoo.ImportRow(entry, exporter, opset, "failed", "import: refused")

    monkeypatch.setattr(import_zoo, "run_entry", fails)
    assert import_zoo.main(["--out", str(out), "--bundles", str(tmp_path / "b")]) == 1
    assert "FAILED: import: refused" in out.read_text()

    # without pytorchcv its entries are SKIPPED rows with the reason, not failures
    from onnxedge.export import zoo

    monkeypatch.setattr(import_zoo, "IMPORT_ZOO", (RESNET,))
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)
    assert import_zoo.main(["--out", str(out), "--only", "resnet18"]) == 0
    assert "SKIPPED: pytorchcv is not installed" in out.read_text()
