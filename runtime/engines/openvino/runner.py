"""Running an OpenVINO compiled model behind the `Session` protocol that ONNX Runtime's session
already follows: ``run(output_names, feeds)``, ``get_inputs()``, ``get_outputs()``.

1. Feeds are checked as ONNX Runtime checks them: every input named once, no unknown name, the
   exact dtype and rank (OpenVINO would convert a float64 array silently).
2. One infer request per thread (`threading.local`), so one session may serve many threads as an
   ONNX Runtime session does; a request is not thread-safe, the compiled model is.
3. Inputs are shared with OpenVINO, not copied (as ONNX Runtime's CPU EP reads numpy memory in
   place); outputs are copied out, so a result stays valid after the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.engines.base import PortInfo
from onnxedge.runtime.engines.openvino.loader import Compiled


def _port_info(port: Any, named: str | None = None) -> PortInfo:
    """A port's name (``named``, the model's own, where the port carries it), shape and dtype."""
    shape = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else None for d in shape)
    name = named if named in port.get_names() else port.get_any_name()
    return PortInfo(name, dims, np.dtype(port.get_element_type().to_dtype()))


def _named(count: int, names: Sequence[str]) -> list[str | None]:
    return list(names) if len(names) == count else [None] * count


class OpenVinoSession:
    """An OpenVINO compiled model with ONNX Runtime's session interface (module docstring)."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        model = compiled.model
        ins, outs = model.inputs, model.outputs
        named_ins = _named(len(ins), compiled.input_names)
        named_outs = _named(len(outs), compiled.output_names)
        self._inputs = [_port_info(p, n) for p, n in zip(ins, named_ins, strict=True)]
        self._outputs = [_port_info(p, n) for p, n in zip(outs, named_outs, strict=True)]
        self._output_ports = {name: p for p in model.outputs for name in p.get_names()}
        self._local = threading.local()

    @property
    def settings(self) -> dict[str, Any]:
        """What OpenVINO reports the model was compiled with (precision, hint, threads, …)."""
        return dict(self.compiled.effective)

    def describe(self) -> str:
        e = self.compiled.effective
        streams = e.get("num_streams")
        more = f", {streams} streams" if isinstance(streams, int) and streams > 1 else ""
        return (
            f"openvino {e['device']} {e['inference_precision']} ({e['performance_hint']}, "
            f"{e['inference_num_threads']} threads{more})"
        )

    def get_inputs(self) -> list[PortInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[PortInfo]:
        return list(self._outputs)

    def request(self) -> Any:
        """A new infer request of its own (the benchmark times one per engine)."""
        return self.compiled.model.create_infer_request()

    def _thread_request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.request()
        return request

    def check_feeds(self, input_feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """1.: the feeds as OpenVINO gets them, or a `ValueError` naming what is wrong."""
        names = [i.name for i in self._inputs]
        unknown = [k for k in input_feed if k not in names]
        missing = [n for n in names if n not in input_feed]
        if unknown or missing:
            raise ValueError(
                f"expected inputs {names}, got {list(input_feed)}"
                + (f" (missing {missing})" if missing else "")
            )
        feeds = {}
        for info in self._inputs:
            value = input_feed[info.name]
            if not isinstance(value, np.ndarray) or value.dtype != info.dtype:
                found = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise ValueError(f"input {info.name!r}: expected {info.dtype}, got {found}")
            if value.ndim != len(info.shape):
                raise ValueError(
                    f"input {info.name!r}: expected rank {len(info.shape)}, got shape "
                    f"{list(value.shape)}"
                )
            feeds[info.name] = value
        return feeds

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The outputs named (all of them for None), in that order, as numpy arrays."""
        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        ports = []
        for name in names:
            if name not in self._output_ports:
                raise ValueError(
                    f"unknown output {name!r}; the model's outputs: "
                    f"{', '.join(o.name for o in self._outputs)}"
                )
            ports.append(self._output_ports[name])
        result = self._thread_request().infer(
            self.check_feeds(input_feed), share_inputs=True, share_outputs=False
        )
        return [np.asarray(result[port]) for port in ports]

    def runtime_ops(self) -> list[dict[str, str]]:
        """The execution graph OpenVINO built (``get_runtime_model``): per node its layer type,
        the kernel (primitive) it runs, its runtime precision and the original ONNX nodes fused
        into it, for the reports in docs/BENCHMARKS.md."""
        keys = ("layerType", "primitiveType", "runtimePrecision", "originalLayersNames")
        ops = []
        for op in self.compiled.model.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            entry = {"name": op.get_friendly_name()}
            entry.update({k: info[k].astype(str) for k in keys if k in info})
            ops.append(entry)
        return ops


__all__ = ["OpenVinoSession"]
