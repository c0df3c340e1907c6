"""The hostile suite: onnxedge's commands fed what a hostile tester would feed them, each case a
real process, with four counts that must stay at 0 (docs/HOSTILE.md):

- tracebacks: a ``Traceback`` on stderr;
- silently wrong rows: predict or evaluate output that has lost a file, split a row, changed a
  field count, is not strict UTF-8 JSON, or names a file other than the one on disk;
- lost variants: a variant a run reported written that is missing from the bundle afterwards;
- long lines: a line on stdout or stderr longer than 200 characters.

A case also fails on an exit status other than the one it expects. Run it with the project's
venv: ``.venv/bin/python tests/hostile/suite.py`` (``--only NAME`` for some; ``--json PATH`` for
the counts); it needs no torch except for the export cases, which it skips without it. It prints
one line per case and the counts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx.parser
from PIL import Image

from onnxedge.runtime.bundle.reader import Bundle, BundleWriter
from onnxedge.runtime.names import unescape

CLI = [sys.executable, "-m", "onnxedge.runtime"]
MAX_LINE = 200
TIMEOUT = 300

MANIFEST = {
    "input": {"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"},
    "output": {"name": "prob", "shape": ["batch", 1], "dtype": "float32"},
    "labels": {"threshold": 0.6, "negative": "dark", "positive": "light"},
    "preprocessing": {"resize": [64, 64]},
    "weights": {"source": "checkpoint", "path": "x.safetensors"},
}
# The mean of each channel, a linear head, a sigmoid: light images score above 0.6, dark ones
# below; a head (Gemm) for optimize's int8 and fp16 to keep in float.
MODEL = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 18]>
    tiny (float[batch,3,64,64] input) => (float[batch,1] prob)
      <float[3,1] w = {2.0, 2.0, 2.0}, float[1] bias = {-3.0}> {
      pooled = GlobalAveragePool(input)
      flat = Flatten(pooled)
      logit = Gemm(flat, w, bias)
      prob = Sigmoid(logit)
    }""").SerializeToString()


@dataclasses.dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str


@dataclasses.dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]
    expect: tuple[int, ...] = (0,)
    rows: Callable[[Path, Result], str | None] | None = None  # what is silently wrong, if any
    variants: Callable[[Path, list[Result]], str | None] | None = None  # what was lost
    stdout: str = "pipe"  # or "full" (/dev/full) or "closed" (a reader that went away)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    signal: int | None = None  # sent once the command has said its first line (it is working)
    concurrent: Callable[[Path], list[str]] | None = None  # a second command run alongside
    hold_lock: str = ""  # a bundle whose writer lock another process holds meanwhile
    needs: str = ""  # "torch": skipped without it; "mount": without a tmpfs


# -- the material -------------------------------------------------------------------------------


def image(path: Path | bytes, level: int, size=(24, 20), mode="RGB", fmt=None, **save) -> None:
    pixels = np.full((size[1], size[0], 3), level, np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    target = os.fsdecode(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    img.save(target, format=fmt, **save)


def png_claiming(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


HOSTILE_NAMES = [
    b"tab\there.png",
    b"new\nline.png",
    b"carriage\rreturn.png",
    b"not-utf8-\xff\xfe.png",
    b"back\\slash.png",
    b"escape-\x1b[31m.png",
    "line\u2028separator.png".encode(),
    "smile-\u7b11.png".encode(),
]


def build(root: Path) -> None:
    """Everything the cases use, under ``root`` (a short path, so that lines measure the
    messages, not the temporary directory's name)."""
    write_bundle(root / "b")
    write_bundle(root / "opt")
    seeded = write_bundle(root / "seeded")
    manifest = json.loads((seeded / "manifest.json").read_text())
    manifest["weights"] = {"source": "seed", "seed": 0}
    (seeded / "manifest.json").write_text(json.dumps(manifest))
    files = root / "img"
    image(files / "good.png", 200)
    (files / "empty.png").write_bytes(b"")
    full = io.BytesIO()
    Image.new("RGB", (80, 80), (9, 9, 9)).save(full, "PNG")
    (files / "cut.png").write_bytes(full.getvalue()[:150])
    (files / "text.png").write_text("not a picture\n")
    image(files / "cmyk.jpg", 120, mode="CMYK", fmt="JPEG")
    Image.fromarray(np.full((20, 24), 40000, np.uint16)).save(files / "sixteen.png")
    image(files / "palette.png", 60, mode="P")
    image(files / "anim.gif", 90, fmt="GIF")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated
    image(files / "exif.jpg", 150, exif=exif.tobytes())
    (files / "dir.png").mkdir()
    os.mkfifo(files / "fifo.png")
    (files / "broken.png").symlink_to(files / "gone.png")
    (files / "loop").symlink_to(files)
    (files / "bomb.png").write_bytes(png_claiming(20000, 20000))
    (files / "large.png").write_bytes(png_claiming(9000, 9000))
    names = root / "names"
    for i, name in enumerate(HOSTILE_NAMES):
        image(os.path.join(os.fsencode(names), name), 30 + 20 * i)
    many = root / "many"
    for i in range(300):
        image(many / f"{i:04d}.png", i % 256, size=(200, 160))
    for split in ("train", "test"):
        for label, level in (("dark", 20), ("light", 230)):
            for i in range(6):
                image(root / "data" / split / label / f"{i}.png", level + i)
            for name in HOSTILE_NAMES[:4]:
                folder = os.fsencode(root / "hdata" / split / label)
                image(os.path.join(folder, name), level)
            image(root / "ddata" / split / label / "ok.png", level)
            (root / "ddata" / split / label / "folder.png").mkdir(parents=True)
    (root / "file").write_text("")
    (root / "null.json").symlink_to(os.devnull)
    deep = write_bundle(root / "deep")
    text = (deep / "manifest.json").read_text()
    (deep / "manifest.json").write_text(text[:-2] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}\n")
    huge = write_bundle(root / "huge")
    with open(huge / "manifest.json", "r+b") as f:
        f.truncate(100 << 20)
    tampered = write_bundle(root / "tampered")
    (tampered / "model.onnx").write_bytes(MODEL + b"\0")
    outside = write_bundle(root / "outside")
    (outside / "model.onnx").unlink()
    (outside / "model.onnx").symlink_to(root / "b" / "model.onnx")
    (root / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")


def write_bundle(out: Path) -> Path:
    with BundleWriter(out) as writer:
        writer.manifest.update(MANIFEST)
        writer.write_bytes("model.onnx", MODEL)
    return out


def checkpoints(root: Path) -> None:
    """The export cases' checkpoints (torch)."""
    import torch

    from onnxedge.models import get_model_spec

    state = get_model_spec("smile_cnn").build("avgpool").state_dict()
    bad = {k: v.clone() for k, v in state.items()}
    bad["fc.weight"] = bad["fc.weight"].to(torch.int64)
    torch.save(bad, root / "int.pt")
    bad = {k: v.clone() for k, v in state.items()}
    bad["conv2.weight"].view(-1)[:5] = float("nan")
    torch.save(bad, root / "nan.pt")

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'ran'}",))

    torch.save({"fc.weight": RunsCode()}, root / "evil.pt")


# -- what is checked ----------------------------------------------------------------------------


def rows_of(result: Result, files: list[bytes], *, fields: int = 3) -> str | None:
    """predict's text rows: one per file, ``fields`` fields each, naming exactly ``files``."""
    try:
        lines = result.stdout.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return "stdout is not UTF-8"
    if len(lines) != len(files):
        return f"{len(lines)} rows for {len(files)} files"
    bad = [line for line in lines if len(line.split("\t")) != fields]
    if bad:
        return f"a row of {len(bad[0].split(chr(9)))} fields"
    named = sorted(unescape(line.split("\t")[0]) for line in lines)
    return None if named == sorted(files) else "rows name other files"


def json_rows(result: Result, files: list[bytes]) -> str | None:
    try:
        records = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
        for r in records:
            r["file"].encode("utf-8")  # no lone surrogates
    except (UnicodeError, ValueError) as e:
        return f"not strict UTF-8 JSON: {e}"
    raw = sorted(
        base64.b64decode(r["file_bytes"]) if "file_bytes" in r else r["file"].encode()
        for r in records
    )
    return None if raw == sorted(files) else f"{len(records)} records name other files"


def in_dir(root: Path, folder: str, *names: str | bytes) -> list[bytes]:
    return [os.path.join(os.fsencode(root / folder), os.fsencode(n)) for n in names]


def one_error(expected: str) -> Callable[[Path, Result], str | None]:
    def check(root: Path, result: Result) -> str | None:
        errors = [x for x in result.stderr.splitlines() if x.startswith("onnxedge: error:")]
        if len(errors) != 1:
            return f"{len(errors)} error lines"
        return None if expected in errors[0] else f"error without {expected!r}: {errors[0]}"

    return check


def variants_kept(root: Path, results: list[Result]) -> str | None:
    """Every variant a run said it wrote is in the bundle afterwards."""
    said: set[str] = set()
    for r in results:
        for line in r.stderr.splitlines():
            if line.startswith("wrote "):
                said |= {v.strip() for v in line.partition(" with ")[2].split(",")}
    have = set(Bundle.open(root / "opt").variants)
    lost = said - have
    if not said:
        return "no run wrote a variant"
    return f"lost {sorted(lost)}" if lost else None


def untouched(name: str, *, leftovers: bool = True) -> Callable[[Path, Result], str | None]:
    def check(root: Path, result: Result) -> str | None:
        try:
            Bundle.open(root / name)
        except Exception as e:
            return f"the bundle is broken: {e}"
        left = [p.name for p in root.iterdir() if p.name.startswith(f".{name}.onnxedge-")]
        return f"left {left}" if leftovers and left else None

    return check


def all_of(*checks: Callable[[Path, Result], str | None]) -> Callable[[Path, Result], str | None]:
    def check(root: Path, result: Result) -> str | None:
        for c in checks:
            problem = c(root, result)
            if problem:
                return problem
        return None

    return check


# -- the cases ----------------------------------------------------------------------------------

IMG_GOOD = ["good.png", "cmyk.jpg", "sixteen.png", "palette.png", "anim.gif", "exif.jpg"]
IMG_BAD = ["empty.png", "cut.png", "text.png", "fifo.png", "broken.png", "bomb.png"]


def predict(*paths: str, extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    return lambda root: ["predict", str(root / "b"), *[str(root / p) for p in paths], *extra]


def predict_one(name: str, code: int = 1, contains: str = "") -> Case:
    def check(root: Path, result: Result) -> str | None:
        problem = rows_of(result, in_dir(root, "img", name))
        if problem or not contains:
            return problem
        return None if contains in result.stdout.decode() else f"no {contains!r}"

    label = f"predict {name}" + (", its message" if contains else "")
    return Case(label, predict(f"img/{name}"), (code,), rows=check)


def hostile_name(name: bytes) -> Case:
    label = name.decode("utf-8", "backslashreplace").encode("unicode_escape").decode()
    return Case(
        f"predict name {label}",
        lambda root: ["predict", str(root / "b"), os.fsdecode(in_dir(root, "names", name)[0])],
        rows=lambda root, r: rows_of(r, in_dir(root, "names", name)),
    )


def evaluate(data: str, *extra: str) -> Callable[[Path], list[str]]:
    return lambda root: ["evaluate", str(root / "b"), "--data", str(root / data), *extra]


def optimize(*extra: str) -> Callable[[Path], list[str]]:
    return lambda root: ["optimize", str(root / "opt"), "--data", str(root / "data"), *extra]


def export(checkpoint: str) -> Callable[[Path], list[str]]:
    return lambda root: [
        "export",
        "--model",
        "smile_cnn",
        "--checkpoint",
        str(root / checkpoint),
        "--out",
        str(root / "exported"),
    ]


def evaluate_rows(expected_failed: int) -> Callable[[Path, Result], str | None]:
    def check(root: Path, result: Result) -> str | None:
        try:
            lines = result.stdout.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            return "stdout is not UTF-8"
        errors = [line for line in lines if "\tERROR\t" in line]
        if len(errors) != expected_failed:
            return f"{len(errors)} ERROR rows for {expected_failed} failed files"
        if any(len(line.split("\t")) != 3 for line in errors):
            return "an ERROR row without 3 fields"
        return None

    return check


CASES: list[Case] = [
    Case(
        "predict good images",
        predict(*[f"img/{n}" for n in IMG_GOOD]),
        rows=lambda root, r: rows_of(r, in_dir(root, "img", *IMG_GOOD)),
    ),
    *[predict_one(n) for n in IMG_BAD],
    predict_one("bomb.png", contains="more than the limit of 64,000,000"),
    predict_one("large.png", contains="64,000,000 (onnxedge predict --max-pixels"),
    Case(
        "predict a folder named like an image, given",
        predict("img/dir.png"),
        (1,),
        rows=one_error("expected image files, found none"),
    ),
    Case(
        "predict folder with a symlink loop",
        predict("img"),
        (1,),
        rows=lambda root, r: rows_of(
            r, in_dir(root, "img", *sorted(IMG_GOOD + IMG_BAD + ["large.png", "dir.png"]))
        ),
    ),
    Case(
        "predict missing file",
        predict("img/none.png"),
        (1,),
        rows=lambda root, r: rows_of(r, in_dir(root, "img", "none.png")),
    ),
    *[hostile_name(n) for n in HOSTILE_NAMES],
    Case(
        "predict hostile names, text",
        predict("names"),
        rows=lambda root, r: rows_of(r, in_dir(root, "names", *HOSTILE_NAMES)),
    ),
    Case(
        "predict hostile names, json",
        predict("names", extra=("--json",)),
        rows=lambda root, r: json_rows(r, in_dir(root, "names", *HOSTILE_NAMES)),
    ),
    Case(
        "predict to a full stdout",
        predict("img/good.png"),
        (1,),
        stdout="full",
        rows=one_error("cannot write the results to standard output: No space left"),
    ),
    Case(
        "predict to a closed pipe",
        predict("many"),
        (1,),
        stdout="closed",
        rows=one_error("standard output: Broken pipe"),
    ),
    Case(
        "predict --threads 64",
        predict("img/good.png", extra=("--threads", "64")),
        rows=lambda root, r: None if "usable core" in r.stderr else "no warning",
    ),
    Case(
        "predict --batch-size 100000",
        predict("names", extra=("--batch-size", "100000")),
        rows=lambda root, r: rows_of(r, in_dir(root, "names", *HOSTILE_NAMES)),
    ),
    Case("predict SIGTERM", predict("many"), (143,), signal=signal.SIGTERM),
    Case("predict SIGINT", predict("many"), (130,), signal=signal.SIGINT),
    Case(
        "predict missing bundle",
        lambda root: ["predict", str(root / "nb"), str(root)],
        (1,),
        rows=one_error("expected a bundle directory"),
    ),
    Case(
        "predict deep manifest",
        lambda root: ["predict", str(root / "deep"), str(root)],
        (1,),
        rows=one_error("nested at most 64 levels deep"),
    ),
    Case(
        "predict 100 MB manifest",
        lambda root: ["predict", str(root / "huge"), str(root)],
        (1,),
        rows=one_error("expected a manifest of at most"),
    ),
    Case(
        "predict tampered model",
        lambda root: ["predict", str(root / "tampered"), str(root / "img/good.png")],
        (1,),
        rows=one_error("does not match the manifest"),
    ),
    Case(
        "predict model linked outside",
        lambda root: ["predict", str(root / "outside"), str(root / "img/good.png")],
        (1,),
        rows=one_error("outside the bundle"),
    ),
    Case("evaluate", evaluate("data"), rows=evaluate_rows(0)),
    Case("evaluate hostile names", evaluate("hdata"), rows=evaluate_rows(0)),
    Case(
        "evaluate hostile names --json",
        evaluate("hdata", "--json", "r.json"),
        rows=lambda root, r: (
            None
            if json.loads((root / "r.json").read_bytes().decode("utf-8"))["evaluated"] == 8
            else "not every file evaluated"
        ),
    ),
    Case(
        "evaluate --json through a link to a device",
        evaluate("data", "--json", "null.json"),
        rows=lambda root, r: None if (root / "null.json").is_symlink() else "the link replaced",
    ),
    Case("evaluate folder named like an image", evaluate("ddata"), (0,), rows=evaluate_rows(2)),
    Case(
        "evaluate to a full stdout",
        evaluate("data"),
        (1,),
        stdout="full",
        rows=one_error("standard output"),
    ),
    Case("evaluate --json into a file", evaluate("data", "--json", "file/r.json"), (1,)),
    Case("evaluate missing data", evaluate("nothing"), (1,)),
    Case(
        "evaluate --threads 64",
        evaluate("data", "--threads", "64"),
        rows=lambda root, r: None if "usable core" in r.stderr else "no warning",
    ),
    Case("data info hostile names", lambda root: ["data", "info", str(root / "hdata")]),
    Case(
        "data info hostile names --json",
        lambda root: ["data", "info", str(root / "hdata"), "--json"],
        rows=lambda root, r: (
            None if json.loads(r.stdout.decode("utf-8"))["listing_sha256"] else "no listing"
        ),
    ),
    Case("check", lambda root: ["check", str(root / "b")]),
    Case(
        "check to a full stdout",
        lambda root: ["check", str(root / "b")],
        (1,),
        stdout="full",
        rows=one_error("standard output"),
    ),
    Case("check deep manifest", lambda root: ["check", str(root / "deep")], (1,)),
    Case("check missing", lambda root: ["check", str(root / "nothing")], (1,)),
    Case("parity without golden data", lambda root: ["parity", str(root / "b")], (1,)),
    Case("parity to a full stdout", lambda root: ["parity", str(root / "b")], (1,), stdout="full"),
    Case(
        "bench deep targets file",
        lambda root: ["bench", str(root / "b"), "--targets", str(root / "deep.toml")],
        (1, 2),
        rows=lambda root, r: None if "nested" in r.stderr else "no word of the nesting",
    ),
    Case(
        "optimize untrained",
        lambda root: ["optimize", str(root / "seeded"), "--data", str(root / "data")],
        (1,),
        rows=one_error("expected a bundle exported from a trained checkpoint"),
    ),
    Case(
        "optimize --json into a file",
        optimize("--fp16", "--json", "file/r.json"),
        (1,),
        rows=all_of(one_error("is not a writable directory"), untouched("opt")),
    ),
    Case(
        "optimize two writers at once",
        optimize("--ort"),
        (0,),
        concurrent=optimize("--fp16"),
        variants=variants_kept,
    ),
    Case(
        "optimize while another holds the lock",
        optimize("--int8"),
        (1,),
        hold_lock="opt",
        env={"ONNXEDGE_LOCK_WAIT": "0"},
        rows=one_error("holds its lock"),
    ),
    Case(
        "optimize SIGTERM",
        optimize("--int8", "--force"),
        (143,),
        signal=signal.SIGTERM,
        rows=untouched("opt"),
    ),
    Case(
        "optimize SIGINT",
        optimize("--int8", "--force"),
        (130,),
        signal=signal.SIGINT,
        rows=untouched("opt"),
    ),
    Case(
        "optimize onto a full disk",
        lambda root: [
            "optimize",
            str(root / "opt"),
            "--data",
            str(root / "data"),
            "--fp16",
            "--force",
            "--out",
            str(root / "disk" / "o"),
        ],
        (1,),
        rows=one_error("No space left on device"),
        needs="mount",
    ),
    Case(
        "export int64 checkpoint",
        export("int.pt"),
        (1,),
        rows=one_error("'fc.weight' is int64; expected floating point"),
        needs="torch",
    ),
    Case(
        "export NaN checkpoint",
        export("nan.pt"),
        (1,),
        rows=one_error("'conv2.weight' holds 5 NaN"),
        needs="torch",
    ),
    Case(
        "export pickle that runs code",
        export("evil.pt"),
        (1,),
        rows=lambda root, r: (
            "the pickle's code ran"
            if (root / "ran").exists()
            else one_error("a pickle of other objects")(root, r)
        ),
        needs="torch",
    ),
]


# -- running them -------------------------------------------------------------------------------


_HOLD = """
import sys
from onnxedge.runtime.bundle.lock import bundle_lock
with bundle_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the suite closes it: the lock is then released and its file removed
"""


def run_case(case: Case, root: Path) -> tuple[list[Result], float]:
    env = {**os.environ, **case.env}
    start = time.monotonic()
    stdout: Any = subprocess.PIPE
    full = None
    if case.stdout == "full":
        full = stdout = open("/dev/full", "wb")  # noqa: SIM115
    second = holder = None
    if case.hold_lock:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(root / case.hold_lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        holder.stdout.readline()  # "held"
    if case.concurrent is not None:
        second = subprocess.Popen(
            [*CLI, *case.concurrent(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        time.sleep(2.0 if case.env else 0.3)
    proc = subprocess.Popen(
        [*CLI, *case.args(root)], stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=root
    )
    if case.stdout == "closed":
        proc.stdout.read(1)
        proc.stdout.close()
    said = b""
    if case.signal is not None:  # predict says its rows on stdout, optimize its steps on stderr
        said = (proc.stdout if case.args(root)[0] == "predict" else proc.stderr).readline()
        proc.send_signal(case.signal)
    out, err = (
        proc.communicate(timeout=TIMEOUT)
        if case.stdout != "closed"
        else (b"", proc.communicate(timeout=TIMEOUT)[1])
    )
    if case.signal is not None and case.args(root)[0] != "predict":
        err = said + err
    elif said:
        out = said + out
    results = [Result(proc.returncode, out or b"", err.decode("utf-8", "replace"))]
    if second is not None:
        out2, err2 = second.communicate(timeout=TIMEOUT)
        results.append(Result(second.returncode, out2, err2.decode("utf-8", "replace")))
    if full is not None:
        full.close()
    if holder is not None:
        holder.stdin.close()
        holder.wait(timeout=60)
    return results, time.monotonic() - start


@contextlib.contextmanager
def small_disk(path: Path):
    path.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="cases whose name has this")
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
    root = Path(tempfile.mkdtemp(prefix="oh", dir="/tmp"))
    counts = {
        "cases": 0,
        "passed": 0,
        "skipped": 0,
        "tracebacks": 0,
        "wrong rows": 0,
        "lost variants": 0,
        "long lines": 0,
        "wrong exit status": 0,
    }
    try:
        build(root)
        if has_torch:
            checkpoints(root)
        with small_disk(root / "disk") as mounted:
            for case in CASES:
                if args.only and not any(o in case.name for o in args.only):
                    continue
                if (case.needs == "torch" and not has_torch) or (
                    case.needs == "mount" and not mounted
                ):
                    counts["skipped"] += 1
                    print(f"SKIPPED | {case.name} | no {case.needs}")
                    continue
                counts["cases"] += 1
                results, seconds = run_case(case, root)
                problems = judge(case, root, results, counts)
                if not problems:
                    counts["passed"] += 1
                verdict = "PASSED" if not problems else "FAILED"
                print(
                    f"{verdict} | {case.name} | exit {results[0].code} | {seconds:.1f} s"
                    + (f" | {'; '.join(problems)}" if problems else ""),
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(" | ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
    return 0 if counts["passed"] == counts["cases"] else 1


def judge(case: Case, root: Path, results: list[Result], counts: dict[str, int]) -> list[str]:
    problems = []
    for r in results:
        if "Traceback" in r.stderr:
            counts["tracebacks"] += 1
            problems.append("traceback: " + r.stderr.strip().splitlines()[-1][:100])
        text = r.stdout.decode("utf-8", "replace").splitlines() + r.stderr.splitlines()
        long = [line for line in text if len(line) > MAX_LINE]
        if long:
            counts["long lines"] += 1
            problems.append(f"a line of {len(long[0])} characters")
    first = results[0]
    if first.code not in case.expect:
        counts["wrong exit status"] += 1
        problems.append(f"expected exit {case.expect}: {first.stderr.strip()[-150:]}")
    if case.rows is not None:
        problem = case.rows(root, first)
        if problem:
            counts["wrong rows"] += 1
            problems.append(problem)
    if case.variants is not None:
        if any(r.code != 0 for r in results):
            problems.append(
                "a writer failed: " + " / ".join(r.stderr.strip()[-120:] for r in results)
            )
        problem = case.variants(root, results)
        if problem:
            counts["lost variants"] += 1
            problems.append(problem)
    return problems


if __name__ == "__main__":
    sys.exit(main())
