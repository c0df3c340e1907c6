"""What a benchmark run is asked to do: the engines and batch sizes (`BenchSettings`) and how many
timed runs (`TimingPlan`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxedge.runtime.bench.engines import PEERS, PROVIDER_DEVICE, VARIANTS
from onnxedge.runtime.bench.machine import default_threads
from onnxedge.runtime.bench.models import LOW_PRECISION_ATOL
from onnxedge.runtime.bench.stats import PERCENTILE_METHOD, THROUGHPUT_DEFINITION
from onnxedge.runtime.bench.targets import Target, check_targets_fit
from onnxedge.runtime.classifier.args import check_kinds
from onnxedge.runtime.classifier.preprocess import DECODES
from onnxedge.runtime.engines import OpenVinoConfig, check_engine, installed_engines
from onnxedge.runtime.engines.onnxruntime.session import provider_name
from onnxedge.runtime.errors import OnnxEdgeError

if TYPE_CHECKING:
    from onnxedge.runtime.bench.files import ReadableFiles

DEFAULT_BATCH_SIZES = (1, 8, 64, 256)
DEFAULT_PROVIDERS = ("cpu", "cuda")
UNTIMED_PER_ROUND = 1
# A target is judged (met or missed) only from at least this many timed runs of each engine it
# compares; fewer give an "indicative" figure. Also the default of --min-iters.
MIN_RUNS_TO_JUDGE = 10


# `check_kinds`: the fields' kinds, before their values are checked.
_PLAN_KINDS = {"iters": "int?", "seconds": "number?"}
_PLAN_KINDS |= dict.fromkeys(("warmup", "min_iters", "rounds", "max_iters"), "int")
_KINDS = {"batch_sizes": "ints", "threads": "int?", "seed": "int", "images_batch_size": "int"}
_KINDS |= dict.fromkeys(("providers", "peers", "openvino_precisions", "images_decodes"), "names")
_KINDS |= {"engines": "names?", "variants": "names?", "images_pools": "names"}
_KINDS |= {"images": "several", "atol": "number", "rtol": "number", "tf32_atol": "number"}


@dataclasses.dataclass(frozen=True)
class TimingPlan:
    """How many runs: a fixed count (``iters``) or a time budget per engine x batch (``seconds``,
    with at least ``min_iters`` runs), split into ``rounds`` in which the engines take turns."""

    warmup: int = 3
    iters: int | None = None
    seconds: float | None = 2.0
    min_iters: int = MIN_RUNS_TO_JUDGE
    rounds: int = 4
    max_iters: int = 100_000

    def __post_init__(self) -> None:
        check_kinds(self, _PLAN_KINDS)
        if (self.iters is None) == (self.seconds is None):
            raise OnnxEdgeError("expected exactly one of --iters and --seconds")
        if self.iters is not None and self.iters < 1:
            raise OnnxEdgeError(f"expected --iters >= 1, found {self.iters}")
        if self.seconds is not None and not self.seconds > 0:
            raise OnnxEdgeError(f"expected --seconds > 0, found {self.seconds}")
        if self.warmup < 0:
            raise OnnxEdgeError(f"expected --warmup >= 0, found {self.warmup}")
        if self.rounds < 1 or self.min_iters < 1:
            raise OnnxEdgeError("expected --rounds and --min-iters >= 1")

    @property
    def effective_rounds(self) -> int:
        return min(self.rounds, self.iters) if self.iters is not None else self.rounds

    def quota(self, round_index: int) -> tuple[int, int, float | None]:
        """(min runs, max runs, time budget in s or None) for one engine's turn in a round."""
        n = self.effective_rounds
        if self.iters is not None:
            count = self.iters // n + (1 if round_index < self.iters % n else 0)
            return count, count, None
        assert self.seconds is not None
        return (
            math.ceil(self.min_iters / n),
            max(1, math.ceil(self.max_iters / n)),
            self.seconds / n,
        )

    def describe(self) -> str:
        if self.iters is not None:
            what = f"{self.iters} timed runs"
        else:
            what = f"{self.seconds:g} s of timed runs (at least {self.min_iters})"
        return (
            f"{self.warmup} warm-up runs, then {what} per engine x batch size, in "
            f"{self.effective_rounds} interleaved rounds, each starting with "
            f"{UNTIMED_PER_ROUND} untimed run"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "description": self.describe()}


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    peers: tuple[str, ...] = tuple(PEERS)
    plan: TimingPlan = dataclasses.field(default_factory=TimingPlan)
    threads: int | None = None  # None: the physical cores this process may use
    seed: int = 0
    checkpoint: str | None = None
    tf32: bool = False
    spinning: bool = True
    atol: float = 1e-4  # output check against the reference engine (probabilities in [0, 1])
    rtol: float = 1e-3
    tf32_atol: float = 1e-2  # TF32 convolutions carry ~10 mantissa bits
    # --engines: onnxruntime (on `providers`) and openvino (the CPU); None: every one installed.
    engines: tuple[str, ...] | None = None
    openvino_precisions: tuple[str, ...] = ("f32",)  # OpenVINO's inference precisions of fp32
    # --variants: the bundle's models to time (`models.bench_models`); None: fp32, and int8 where
    # the bundle has it.
    variants: tuple[str, ...] | None = None
    # --images: image files for the from-files rows (`files`), and the batch size they run at.
    images: tuple[str, ...] = ()
    images_batch_size: int = 32
    images_decodes: tuple[str, ...] = DECODES  # --decode: one from-files row per decode
    # --decode-pool: one from-files row per pool (`POOLS`) too; empty: predict's default pool.
    images_pools: tuple[str, ...] = ()
    images_source: str = ""  # what the user gave (the folders), for the report
    # The files under --images that cannot be read, (file, reason): left out of ``images`` by
    # `benchmark` (`files.readable_files`) and named in the report.
    images_unreadable: tuple[tuple[str, str], ...] = ()
    # What the user asks of the figures (--target, --targets); none by default.
    targets: tuple[Target, ...] = ()
    # --tuned: batch size -> the setup a tuning file chose for it (`onnxedge.runtime.tune`),
    # timed as an extra row at that batch size (`tuned`); empty without --tuned.
    tuned: Mapping[int, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_kinds(self, _KINDS)
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise OnnxEdgeError(f"expected batch sizes >= 1, found {list(self.batch_sizes)}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise OnnxEdgeError(
                f"unknown peer {unknown[0]!r}; expected some of: {', '.join(PEERS)} (or none)"
            )
        for p in self.providers:
            provider_name(p)
        for e in self.engines or ():
            check_engine(e)
        for p in self.openvino_precisions:
            OpenVinoConfig(precision=p)
        unknown = [v for v in self.variants or () if v not in VARIANTS]
        if unknown or self.variants == ():
            raise OnnxEdgeError(
                f"expected variants out of {', '.join(VARIANTS)}, found {list(self.variants or ())}"
            )
        unknown = [d for d in self.images_decodes if d not in DECODES]
        if unknown or not self.images_decodes:
            raise OnnxEdgeError(
                f"expected --decode out of {', '.join(DECODES)}, found {list(self.images_decodes)}"
            )
        if self.images_batch_size < 1:
            raise OnnxEdgeError(
                f"expected --images-batch-size >= 1, found {self.images_batch_size}"
            )
        if self.threads is not None and self.threads < 1:
            raise OnnxEdgeError(f"expected --threads >= 1, found {self.threads}")
        if self.seed < 0:
            raise OnnxEdgeError(
                f"expected --seed >= 0 (numpy seeds are non-negative), found {self.seed}"
            )
        check_targets_fit(
            self.targets,
            batch_sizes=self.batch_sizes,
            devices=self.devices,
            peers=[PEERS[p] for p in self.peers],
            variants=self.variants,
            files=bool(self.images),
            files_batch_size=self.images_batch_size,
        )

    @property
    def readable_images(self) -> ReadableFiles:
        """The files the from-files rows time and those left out."""
        from onnxedge.runtime.bench.files import ReadableFiles

        return ReadableFiles(self.images, self.images_unreadable)

    @property
    def resolved_engines(self) -> tuple[str, ...]:
        """The engines asked for, or every engine installed here (`installed_engines`)."""
        return self.engines if self.engines is not None else installed_engines()

    @property
    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads()

    @property
    def check_atol(self) -> float:
        """The output check's atol: looser where TF32 is allowed on the GPU."""
        return max(self.atol, self.tf32_atol) if self.tf32 else self.atol

    @property
    def devices(self) -> tuple[str, ...]:
        devs = (PROVIDER_DEVICE.get(provider_name(p), "cuda") for p in self.providers)
        return tuple(dict.fromkeys(devs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "engines": list(self.resolved_engines),
            "engines_source": "--engines" if self.engines is not None else "every one installed",
            "openvino_precisions": list(self.openvino_precisions),
            "variants": list(self.variants) if self.variants is not None else None,
            "variants_source": "--variants"
            if self.variants is not None
            else "fp32, and int8 where the bundle has it",
            "images": {
                "source": self.images_source,
                "files": len(self.images),
                "batch_size": self.images_batch_size,
                "decodes": list(self.images_decodes),
                "pools": list(self.images_pools) or ["predict's default"],
                **self.readable_images.to_dict(),
            }
            if self.images
            else None,
            "providers": [provider_name(p) for p in self.providers],
            "batch_sizes": list(self.batch_sizes),
            "peers": [PEERS[p] for p in self.peers],
            "timing": self.plan.to_dict(),
            "threads": self.resolved_threads,
            "threads_source": "--threads" if self.threads is not None else "physical cores",
            "thread_note": "ORT intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS and "
            "torch.set_num_threads get the same count",
            "seed": self.seed,
            "tuned": {str(b): dataclasses.asdict(s) for b, s in self.tuned.items()},
            "input": "float32, uniform in [0, 1), one array per batch size from the seed, "
            "the same for every engine",
            "tf32": self.tf32,
            "intra_op_spinning": self.spinning,
            "output_check": {
                "reference": "at each batch size, the first engine that runs on the same "
                "numerics: fp32 and fp16 models (model.onnx, its ORT-format file, the fp16 "
                "variant, OpenVINO's bf16 inference) against ORT's CPU EP on model.onnx when "
                "cpu is among the providers; an int8 model against the first int8 row (ORT's "
                "CPU EP on the int8 variant): its ranges are calibrated on real images and may "
                "clip these random inputs, and how far it is from fp32 is its accuracy gate's "
                "business (onnxedge optimize)",
                "low_precision_atol": LOW_PRECISION_ATOL,
                "atol": self.check_atol,
                "rtol": self.rtol,
            },
            "percentile_method": f"numpy.percentile(method={PERCENTILE_METHOD!r})",
            "throughput": THROUGHPUT_DEFINITION,
            "clock": "time.perf_counter_ns around each call; device modes synchronise before "
            "returning",
        }
