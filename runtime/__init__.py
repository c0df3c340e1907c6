"""The torch-free side of onnxedge: bundles, checks, sessions and the CLI (`onnxedge.runtime`).

Nothing in this package imports torch; it runs on the target with onnxruntime and numpy.

The Python API, one function per command, each returning its result object::

    from onnxedge.runtime import Bundle, Classifier, OnnxEdgeError, check_parity

    classifier = Classifier.from_bundle("build/smile_cnn")
    prediction = classifier.predict_images([image])[0]
    result = check_parity("build/smile_cnn", providers=["cpu"])
    print(bool(result), result.report.lines())

| command | function | returns |
| --- | --- | --- |
| ``onnxedge check`` | `check_path` | `CheckReport` |
| ``onnxedge parity`` | `check_parity` (``localize=`` for ``--localize``) | `ParityResult` |
| ``onnxedge bench`` | `benchmark` (with `BenchSettings`) | `BenchReport` |
| ``onnxedge tune`` | `tune_bundle` (with `TuneSettings`) | `TuneResult` |
| ``onnxedge predict`` | `predict` (or `Classifier`) | `FilePredictions` |
| ``onnxedge evaluate`` | `evaluate_bundle` | `EvaluationResult` |
| ``onnxedge optimize`` | `optimize_bundle` (with `OptimizeRequest`) | `OptimizeResult` |
| ``onnxedge data info`` | `open_dataset` (``.describe()``) | `Dataset` |
| ``onnxedge data synth`` | `write_faces` (with `FaceStyle`) | `SynthResult` |
| ``onnxedge pack`` | `pack_bundle` | `PackResult` |
| ``onnxedge inspect`` | `inspect_path` | `Inspection` |

Errors a user can cause raise `OnnxEdgeError` (its message is one line); nothing here prints.
Its kinds: `ArgumentError` (also a `ValueError`: an argument the function does not take),
`BundleError`, `ImageReadError` (one image; ``reason`` without the file's name),
`ProviderUnavailable` and its `EngineUnavailable`, `ModelOutputError`. `load_pixels` and
`load_image` are the file-to-pixels steps of `Classifier`, with `MAX_PIXELS` their limit.
The names are imported on first use (module ``__getattr__``), so ``import onnxedge.runtime`` stays
cheap: it loads neither onnxruntime nor onnx nor torch. The export side is `onnxedge.export`.
"""

from __future__ import annotations

from onnxedge.runtime.lazy_api import lazy_names

# name -> the module that defines it, or "module:attribute" where the name differs (a public name
# must not be a subpackage's, which would shadow it once the subpackage is imported).
_API = {
    "OnnxEdgeError": "onnxedge.runtime.errors",
    "ArgumentError": "onnxedge.runtime.errors",
    "BundleError": "onnxedge.runtime.errors",
    "ImageReadError": "onnxedge.runtime.errors",
    "ProviderUnavailable": "onnxedge.runtime.errors",
    "EngineUnavailable": "onnxedge.runtime.engines.base",
    "ModelOutputError": "onnxedge.runtime.classifier.predictions",
    "load_pixels": "onnxedge.runtime.classifier.preprocess",
    "load_image": "onnxedge.runtime.classifier.preprocess",
    "MAX_PIXELS": "onnxedge.runtime.classifier.preprocess",
    "Bundle": "onnxedge.runtime.bundle.reader",
    "TensorSpec": "onnxedge.runtime.bundle.manifest",
    "Classifier": "onnxedge.runtime.classifier.classifier",
    "Prediction": "onnxedge.runtime.classifier.predictions",
    "FileResult": "onnxedge.runtime.classifier.predictions",
    "predict": "onnxedge.runtime.classifier.predict",
    "FilePredictions": "onnxedge.runtime.classifier.predict",
    "pack_bundle": "onnxedge.runtime.bundle.pack",
    "PackResult": "onnxedge.runtime.bundle.pack",
    "check_path": "onnxedge.runtime.check.check",
    "CheckReport": "onnxedge.runtime.check.check",
    "inspect_path": "onnxedge.runtime.check.inspect",
    "Inspection": "onnxedge.runtime.check.inspect",
    "check_parity": "onnxedge.runtime.parity.check",
    "ParityResult": "onnxedge.runtime.parity.check",
    "ToleranceOverrides": "onnxedge.runtime.parity.tolerances",
    "benchmark": "onnxedge.runtime.bench.run",
    "BenchSettings": "onnxedge.runtime.bench.settings",
    "BenchReport": "onnxedge.runtime.bench.report",
    "tune_bundle": "onnxedge.runtime.tune.run:tune",
    "TuneSettings": "onnxedge.runtime.tune.run",
    "TuneResult": "onnxedge.runtime.tune.run",
    "evaluate_bundle": "onnxedge.runtime.data.evaluate",
    "EvaluationResult": "onnxedge.runtime.data.evaluate",
    "optimize_bundle": "onnxedge.runtime.variants.optimize",
    "OptimizeRequest": "onnxedge.runtime.variants.optimize_result",
    "OptimizeResult": "onnxedge.runtime.variants.optimize_result",
    "open_dataset": "onnxedge.runtime.data",
    "Dataset": "onnxedge.runtime.data.dataset",
    "write_faces": "onnxedge.runtime.data.synth",
    "FaceStyle": "onnxedge.runtime.data.synth_style",
    "SynthResult": "onnxedge.runtime.data.synth",
}

__all__ = sorted(_API)

__getattr__, __dir__ = lazy_names("onnxedge.runtime", _API, globals())
