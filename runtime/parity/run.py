"""`run_parity`: ``model.onnx`` on every target at every batch size, against the reference."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.bundle.outputs import (
    BINARY_KINDS,
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    centred_logits,
    logits_tensor,
    probabilities,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.classifier import check_external_data
from onnxedge.runtime.compare import compare_arrays
from onnxedge.runtime.engines import ONNXRUNTIME, open_session
from onnxedge.runtime.engines.onnxruntime.session import make_session, provider_name
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, ProviderUnavailable, first_line
from onnxedge.runtime.parity.graph import with_logits_output
from onnxedge.runtime.parity.preprocessing import check_preprocessing
from onnxedge.runtime.parity.reference import Reference, ReferenceBatch
from onnxedge.runtime.parity.report import ParityReport
from onnxedge.runtime.parity.rounding import (
    FLOAT32,
    FLOOR,
    SPREAD,
    SPREAD_FACTOR,
    BoundCheck,
    Judge,
    Rounding,
    reference_rounding,
)
from onnxedge.runtime.parity.rows import (
    FAILED,
    PASSED,
    SKIPPED,
    ParityRow,
    label_agreement,
    top1_agreement,
)
from onnxedge.runtime.parity.tolerances import Target, ToleranceOverrides, Tolerances
from onnxedge.runtime.parity.variant_judge import VariantBounds, judge_variant

# onnxruntime's session config key for where a model loaded from bytes finds its external data.
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


@dataclasses.dataclass(frozen=True)
class _Sessions:
    shipped: Any
    checked: Any
    tf32_confirmed: bool | None  # None where the target has no TF32 setting


def run_parity(
    bundle: Bundle,
    reference: Reference,
    *,
    targets: Sequence[Target],
    batch_sizes: Sequence[int] | None = None,
    overrides: ToleranceOverrides | None = None,
    required: Sequence[str] = (),
    model: Path | None = None,
    variant: VariantBounds | None = None,
) -> ParityReport:
    """Run ``model.onnx`` (or ``model``: a variant's ONNX file, `Bundle.variant_model`, verified
    by the caller) on every target at every batch size and compare with ``reference``.

    1. A target whose provider cannot run here (`ProviderUnavailable`) gives SKIPPED rows with the
       reason (FAILED where it is required).
    2. Any other failure to make its sessions (onnxruntime cannot load the model, a TF32 setting
       it did not take) gives FAILED rows: a model that does not load is not "not tested".
    3. External data: the shipped model is loaded from its path, so its external data resolves
       as on the device; the in-memory logits copy is told the bundle's directory. Either way
       the external files must lie inside the bundle and match the manifest
       (`check_external_data`).
    4. ``engine`` openvino targets (`Target.engine`) compile the shipped file with OpenVINO at
       their precision; an OpenVINO that cannot run here is SKIPPED as in 1.
    5. Each output is judged against PyTorch's own float32 rounding of the model over every
       batch the reference holds, whichever batches run, times the target's factor, with a
       floor, under the target's tolerances as a guard (`onnxedge.runtime.parity.rounding`);
       a variant in fewer bits with ``variant`` bounds, as a variant
       (`onnxedge.runtime.parity.variant_judge`).
    """
    sizes = tuple(batch_sizes) if batch_sizes else reference.batch_sizes
    # The preprocessing check re-makes the structured rows of every batch the reference holds.
    preprocessing = check_preprocessing(bundle.preprocessing, reference)
    roundings = _roundings(reference, bundle.output_kind)  # 5.: before the selection
    reference = reference.select(sizes)
    check_external_data(bundle)

    model_path = model or bundle.model_path
    try:
        graph = onnx.load(str(model_path), load_external_data=False)
    except Exception as e:
        raise BundleError(f"{model_path} is not an ONNX model: {first_line(e)}") from None
    kind = bundle.output_kind
    found = logits_tensor(graph, kind)
    # A variant's graph names its tensors its own way (an fp16 one casts around its head): its
    # logits are whatever feeds its final activation; model.onnx's must be the recorded tensor.
    logits_name = found if model is not None else (reference.logits_name or found)
    if logits_name != found:
        raise BundleError(
            f"the golden data was recorded for the logits tensor {logits_name!r}, but in "
            f"{model_path} the {kind} output's logits are {found!r}"
        )
    checked_bytes = with_logits_output(graph, logits_name).SerializeToString()

    rows: list[ParityRow] = []
    for target in targets:
        tolerances = target.tolerances(overrides, reference.precision)
        key = target.provider if target.engine == ONNXRUNTIME else target.engine
        is_required = key in required
        try:
            sessions = _open_sessions(target, model_path, checked_bytes, logits_name)
        except OnnxEdgeError as e:
            if isinstance(e, ProviderUnavailable) and not is_required:  # 1.
                status, why = SKIPPED, str(e)
            elif isinstance(e, ProviderUnavailable):
                status, why = FAILED, f"required, but it did not run: {e}"
            else:  # 2.
                status, why = FAILED, f"cannot run the model here: {e}"
            rows += [
                ParityRow(
                    target.provider,
                    size,
                    status,
                    tolerances,
                    tf32=target.tf32,
                    reason=why,
                    required=is_required,
                    engine=target.engine,
                    precision=target.precision,
                )
                for size in sizes
            ]
            continue
        for size in sizes:
            rows.append(
                _run_row(
                    target,
                    sessions,
                    reference.batches[size],
                    input_name=bundle.input.name,
                    logits_name=logits_name,
                    tolerances=tolerances,
                    kind=kind,
                    threshold=bundle.threshold if kind in BINARY_KINDS else None,
                    required=is_required,
                    roundings=roundings,
                    variant=variant,
                )
            )
    return ParityReport(
        bundle=str(bundle.path),
        reference=reference.description,
        preprocessing=preprocessing,
        rows=tuple(rows),
    )


def _open_sessions(
    target: Target, model_path: Path, checked_bytes: bytes, logits_name: str
) -> _Sessions:
    if target.engine != ONNXRUNTIME:
        # 4. OpenVINO reads the shipped file twice; the checked copy exposes the logits tensor
        # as an extra output (the same graph, no modified file).
        def compiled(extra: Sequence[str]) -> Any:
            return open_session(
                target.engine,
                model_path,
                provider=target.provider,
                precision=target.precision or "f32",
                extra_outputs=extra,
            )

        return _Sessions(compiled(()), compiled((logits_name,)), None)
    config = target.session_config()
    shipped = make_session(model_path, config)  # 3.: a path, as the device loads it
    entries = {**config.config_entries, _EXTERNAL_DATA_FOLDER: str(model_path.parent)}
    checked = make_session(checked_bytes, dataclasses.replace(config, config_entries=entries))
    confirmed = [_tf32_confirmed(target, session) for session in (shipped, checked)]
    return _Sessions(shipped, checked, None if target.tf32 is None else all(confirmed))


def _tf32_confirmed(target: Target, session: Any) -> bool:
    """Whether onnxruntime reports running with the TF32 setting requested (False where it does
    not report ``use_tf32``); an error where it reports another one."""
    if target.tf32 is None:
        return False
    options = session.get_provider_options().get(provider_name(target.provider), {})
    effective = options.get("use_tf32")
    wanted = "1" if target.tf32 == "on" else "0"
    if effective is None:
        return False
    if str(effective) != wanted:
        raise OnnxEdgeError(
            f"asked onnxruntime for use_tf32={wanted} on {target.provider}, it runs with "
            f"use_tf32={effective}"
        )
    return True


def _run_row(
    target: Target,
    sessions: _Sessions,
    ref: ReferenceBatch,
    *,
    input_name: str,
    logits_name: str,
    tolerances: Tolerances,
    kind: str,
    threshold: float | None,
    required: bool,
    roundings: tuple[Rounding, Rounding] | None = None,
    variant: VariantBounds | None = None,
) -> ParityRow:
    """One row. Probabilities come from the shipped output as its kind says (the output, or its
    sigmoid or softmax); softmax inputs are compared centred (`centred_logits`). Labels: at
    ``threshold`` for one output, the top-1 class for K (``threshold`` None)."""
    feeds = {input_name: ref.inputs}
    row = ParityRow(
        target.provider,
        ref.batch,
        FAILED,
        tolerances,
        tf32=target.tf32,
        tf32_confirmed=sessions.tf32_confirmed,
        required=required,
        engine=target.engine,
        precision=target.precision,
    )
    try:
        output = sessions.shipped.run(None, feeds)[0]
        logits = sessions.checked.run([logits_name], feeds)[0]
    except Exception as e:  # onnxruntime's own error types
        return dataclasses.replace(row, reason=f"{target.engine} failed: {first_line(e)}")
    if np.ndim(logits) == 4 and np.shape(logits)[2:] == (1, 1):
        # A 1x1-convolution classifier's logits, [N, K, 1, 1], before the output's Flatten.
        logits = np.reshape(logits, (len(logits), -1))
    prob = output if kind == SIGMOID_PROBABILITY else probabilities(output, kind)
    if kind == PROBABILITIES:
        logits = centred_logits(logits, kind)
        ref = dataclasses.replace(
            ref,
            logits=centred_logits(ref.logits, kind),
            logits_f32=centred_logits(ref.logits_f32, kind),
        )
    prob_c = compare_arrays(prob, ref.prob, atol=tolerances.prob.atol, rtol=tolerances.prob.rtol)
    logits_c = compare_arrays(
        logits, ref.logits, atol=tolerances.logits.atol, rtol=tolerances.logits.rtol
    )
    if variant is not None and prob_c.shape_ok:
        verdict = judge_variant(
            variant, prob, ref.prob, ref.kinds, fp32_guard=tolerances.prob, threshold=threshold
        )
        return dataclasses.replace(
            row,
            status=FAILED if verdict.failures else PASSED,
            prob=prob_c,
            logits=logits_c,
            labels=verdict.labels,
            prob_check=verdict.prob_check,
            variant=verdict,
            reason="; ".join(verdict.failures),
        )
    checks = []
    failures = []
    for i, (name, actual, expected, tolerance) in enumerate(
        (
            ("prob", prob, ref.prob, tolerances.prob),
            ("logits", logits, ref.logits, tolerances.logits),
        )
    ):
        judge = Judge(
            tolerance,
            roundings[i] if roundings else None,
            tolerances.rounding_factor,
            tolerances.spread_least,
        )
        check = judge.check(actual, expected)
        checks.append(check)
        if check.detail.startswith("shape"):
            failures.append(f"{name}: {check.detail}")
        elif not check:
            rows = _rows(check.rows_outside, ref.kinds)
            failures.append(f"{name} outside {_bound_name(check)} in rows {rows}")
    labels = None
    if prob_c.shape_ok:
        # A flip is a tie where the reference's classes (or its probability and the threshold)
        # lie within the bound the prob check allowed each: the float32 spread may be that wide.
        bounds = checks[0].judge.bounds(np.asarray(ref.prob, dtype=np.float64))[0]
        labels = (
            label_agreement(
                prob, ref.prob, threshold=threshold, tolerance=tolerances.prob, bounds=bounds
            )
            if threshold is not None
            else top1_agreement(prob, ref.prob, tolerance=tolerances.prob, bounds=bounds)
        )
    if labels is not None and not labels:
        failures.append(f"labels flipped in rows {list(labels.flips_outside_tolerance)}")
    return dataclasses.replace(
        row,
        status=FAILED if failures else PASSED,
        prob=prob_c,
        logits=logits_c,
        labels=labels,
        prob_check=checks[0],
        logits_check=checks[1],
        prob_vs_f32=compare_arrays(
            prob, ref.prob_f32, atol=tolerances.prob.atol, rtol=tolerances.prob.rtol
        ),
        logits_vs_f32=compare_arrays(
            logits, ref.logits_f32, atol=tolerances.logits.atol, rtol=tolerances.logits.rtol
        ),
        reason="; ".join(failures),
    )


def _roundings(reference: Reference, kind: str) -> tuple[Rounding, Rounding]:
    """PyTorch's float32 rounding of the probabilities and logits (softmax inputs centred, as
    they are compared) over every batch the reference holds."""
    batches = list(reference.batches.values())
    logits = [b.logits for b in batches]
    logits32 = [b.logits_f32 for b in batches]
    if kind == PROBABILITIES:
        logits = [centred_logits(x, kind) for x in logits]
        logits32 = [centred_logits(x, kind) for x in logits32]
    spread = reference.float32_spread or {}
    prob = reference_rounding(
        [b.prob for b in batches], [b.prob_f32 for b in batches], spread.get("prob")
    )
    return prob, reference_rounding(logits, logits32, spread.get("logits"))


def _bound_name(check: BoundCheck) -> str:
    """The bound that decided, in words: ``the tolerance``, ``100x PyTorch's float32 rounding``."""
    if check.decided_by == FLOAT32:
        return f"{check.judge.factor:g}x PyTorch's float32 rounding"
    if check.decided_by == SPREAD and check.judge.factor is None:
        return f"{SPREAD_FACTOR:g}x the float32 reference's own spread"
    if check.decided_by == SPREAD:
        factor = min(float(check.judge.factor), SPREAD_FACTOR)
        return f"{factor:g}x the spread of PyTorch's float32 kernels"
    return "the float32 floor" if check.decided_by == FLOOR else "the tolerance"


def _rows(rows: Sequence[int], kinds: Sequence[str], most: int = 4) -> str:
    """Which rows broke the bound, and what they are: ``0 (zeros), 5 (random), …``."""
    named = [f"{i} ({kinds[i]})" for i in rows]
    more = f", and {len(named) - most} more" if len(named) > most else ""
    return ", ".join(named[:most]) + more
