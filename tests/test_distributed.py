"""`predict --ray` and `evaluate --ray` (onnxedge.runtime.distributed): a local Ray of 2 CPUs,
started once for the module, whose rows and figures must be a local run's, row for row; an actor
killed mid-run; the listing of URIs; what a machine without Ray says."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_predict_cli import good_image, mixed  # noqa: F401  (mixed: a fixture used below)

from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.files import find_images
from onnxedge.runtime.cli import main
from onnxedge.runtime.data import open_dataset
from onnxedge.runtime.data.celeba import IMAGES
from onnxedge.runtime.data.evaluate import evaluate_bundle
from onnxedge.runtime.data.synth import write_faces
from onnxedge.runtime.distributed import (
    BundlePredictor,
    RayRun,
    check_address,
    evaluate_on_ray,
    expand_uris,
)


def run_cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for this module, or a skip that says why it cannot start."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'onnxedge[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024 * 1024,
            logging_level="ERROR",
            log_to_driver=False,
        )
    except Exception as e:  # any reason Ray cannot start on this machine is a skip, said
        pytest.skip(f"Ray cannot start on this machine: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """40 synthetic faces in CelebA's layout; one of the test split's files is not an image."""
    root = write_faces(tmp_path_factory.mktemp("ray") / "faces", count=40, seed=7, workers=1).out
    (root / IMAGES / "000038.jpg").write_bytes(b"not a jpeg")
    return root


def test_predict_lines_are_a_local_runs(smile_bundle, mixed, ray_cluster, monkeypatch):  # noqa: F811
    """The mixed directory of bad files (truncated, empty, decompression bombs, a directory
    named like an image, hidden files, a subdirectory) and a missing path, named relative to
    the driver's working directory (an actor's is another)."""
    root, expected = mixed
    monkeypatch.chdir(root.parent)
    args = ["predict", smile_bundle, root.name, "missing.png", "--providers", "cpu"]
    local = run_cli(*args, "--batch-size", "3")
    on_ray = run_cli(*args, "--batch-size", "3", "--ray", "--ray-actors", "2")
    assert local[0] == on_ray[0] == 1  # files failed
    assert on_ray[1] == local[1]
    assert len(on_ray[1].splitlines()) == len(expected) + 1
    assert "13 files: 4 classified, 9 failed (Ray Data: 2 actors x 1 thread" in on_ray[2]


def test_evaluate_figures_are_a_local_evaluates(smile_bundle, faces, ray_cluster):
    data = open_dataset(faces)
    local = evaluate_bundle(smile_bundle, data, split="test", provider="cpu", batch_size=2)
    on_ray = evaluate_on_ray(
        smile_bundle, data, split="test", provider="cpu", batch_size=2, actors=2
    )
    assert len(local.failed) == 1 and local.evaluated == 3
    assert on_ray.to_dict() == {**local.to_dict(), "provider": on_ray.provider}
    assert "2 actors" in on_ray.provider
    # and through the command, with its exit status
    code, out, _ = run_cli(
        "evaluate", smile_bundle, "--data", faces, "--split", "train", "--ray", "--providers", "cpu"
    )
    code_local, out_local, _ = run_cli(
        "evaluate", smile_bundle, "--data", faces, "--split", "train", "--providers", "cpu"
    )
    assert code == code_local == 0
    what_ran = re.compile(r"provider .*   variant")
    assert what_ran.sub("", out) == what_ran.sub("", out_local)


def test_an_actor_killed_mid_run_is_restarted_and_no_row_is_lost(
    smile_bundle, faces, tmp_path, ray_cluster
):
    paths = sorted(str(p) for p in (faces / IMAGES).iterdir())
    marker, starts = tmp_path / "kill-once", tmp_path / "starts"
    marker.touch()
    starts.mkdir()

    # Defined here, so that Ray pickles the class itself (the tests are not importable there).
    class DiesOnce(BundlePredictor):
        """Its process is killed (SIGKILL) on its second batch, once in the whole run."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            (starts / str(os.getpid())).touch()
            self.calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2:
                try:
                    marker.unlink()
                except FileNotFoundError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    run = RayRun(smile_bundle, provider="cpu", batch_size=3, actors=2, predictor=DiesOnce)
    on_ray = list(run.results(paths))
    local = list(Classifier.from_bundle(smile_bundle, provider="cpu").predict_files(paths))
    assert not marker.exists()  # an actor was killed
    assert len(list(starts.iterdir())) >= 3  # 2 actors, one started again
    assert on_ray == local  # every row once, in order, with the local run's numbers


BIRDS = """
from onnxedge.models.families import mobilenetv3_like


def birds():
    return mobilenetv3_like(num_classes=3, width=8, final="logits")
"""


def test_k_class_lines_and_parquet_are_a_local_runs(mixed, tmp_path, ray_cluster):  # noqa: F811
    """A model with K classes: --json with --top-k, and the Parquet file's class columns."""
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "zoo_of_mine.py").write_text(BIRDS)
    (tmp_path / "birds.txt").write_text("robin\nwren\nkestrel\n")
    bundle = tmp_path / "birds"
    code, out, _ = run_cli(
        "export",
        "--model",
        f"{tmp_path / 'zoo_of_mine.py'}:birds",
        "--input-shape",
        "3,48,64",
        "--labels",
        tmp_path / "birds.txt",
        "--out",
        bundle,
    )
    assert code == 0, out
    root, _ = mixed
    args = ["predict", bundle, root, "--providers", "cpu", "--json", "--top-k", "2"]
    local, on_ray = run_cli(*args), run_cli(*args, "--ray")
    assert local[0] == on_ray[0] == 1 and on_ray[1] == local[1]
    out = tmp_path / "birds.parquet"
    assert run_cli("predict", bundle, root, "--providers", "cpu", "--ray", "--output", out)[0] == 1
    full = [json.loads(line) for line in run_cli(*args[:-2])[1].splitlines()]
    rows = pq.read_table(out).to_pylist()
    assert [r["file"] for r in rows] == [w["file"] for w in full]
    for row, want in zip(rows, full, strict=True):
        if "error" in want:
            assert row["error"] == want["error"] and row["class_index"] is None
        else:
            classes = ["robin", "wren", "kestrel"]
            assert dict(zip(classes, row["probabilities"], strict=True)) == want["probabilities"]
            assert (row["label"], row["class_index"]) == (want["label"], want["class_index"])
    # evaluate on class folders named by the model's classes, one file not an image
    data = tmp_path / "birds_data"
    for i, name in enumerate(["robin", "wren", "kestrel"] * 3):
        good_image(data / "test" / name / f"{i}.png", i)
    (data / "test" / "wren" / "bad.png").write_bytes(b"not a png")
    args = ["evaluate", bundle, "--data", data, "--providers", "cpu", "--json"]
    local_json, ray_json = tmp_path / "local.json", tmp_path / "ray.json"
    assert run_cli(*args, local_json)[0] == run_cli(*args, ray_json, "--ray")[0] == 0
    local, on_ray = json.loads(local_json.read_text()), json.loads(ray_json.read_text())
    assert local["failed"] and on_ray == {**local, "provider": on_ray["provider"]}


def test_cuda_on_a_cluster_without_gpus_is_one_line(smile_bundle, tmp_path, ray_cluster):
    good_image(tmp_path / "a.png", 1)
    code, out, err = run_cli("predict", smile_bundle, tmp_path, "--ray", "--providers", "cuda")
    assert (code, out) == (1, "")
    assert "expected GPUs in the cluster, found none (2 CPUs)" in err


def test_uri_listing_walks_as_a_local_directory(mixed):  # noqa: F811
    pytest.importorskip("pyarrow", reason="pyarrow comes with onnxedge[ray]")
    root, _ = mixed
    (root / "sub" / "deeper").mkdir()
    good_image(root / "sub" / "deeper" / "m.jpg", 7)
    good_image(root / "sub" / "a_first.png", 8)
    (root / "_underscored.jpg").write_bytes(b"x")
    local = [str(p) for p in find_images([str(root)])]
    uri = [str(p) for p in expand_uris([root.as_uri()])]
    assert uri == [root.as_uri() + p[len(str(root)) :] for p in local]
    assert expand_uris(["relative.jpg", root.as_uri() + "/a.jpg"]).__next__() == "relative.jpg"


def test_uri_run_to_parquet_has_the_local_rows(smile_bundle, mixed, tmp_path, ray_cluster):  # noqa: F811
    pq = pytest.importorskip("pyarrow.parquet")
    root, _ = mixed
    out = tmp_path / "scores.parquet"
    code, stdout, err = run_cli(
        "predict", smile_bundle, root.as_uri(), "--ray", "--providers", "cpu", "--output", out
    )
    assert (code, stdout) == (1, "")
    assert "12 files: 4 classified, 8 failed" in err
    rows = pq.read_table(out).to_pylist()
    code_local, local, _ = run_cli("predict", smile_bundle, root, "--providers", "cpu", "--json")
    assert code_local == 1
    prefix = root.as_uri()
    for row, line in zip(rows, local.splitlines(), strict=True):
        want = json.loads(line)
        assert row["file"] == prefix + want.pop("file")[len(str(root)) :]
        assert {k: v for k, v in row.items() if k != "file" and v is not None} == want
    assert json.loads(pq.read_schema(out).metadata[b"classes"]) == ["not smiling", "smiling"]


def test_a_name_that_is_not_utf8_runs_on_ray_as_locally(smile_bundle, tmp_path, ray_cluster):
    """A file name outside UTF-8 was a pyarrow traceback and no rows at all; now the lines are
    the local run's, and the Parquet file holds the name escaped with its raw bytes."""
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "imgs"
    folder.mkdir()
    good_image(folder / "ok.png", 1)
    good_image(folder / os.fsdecode(b"caf\xe9.png"), 2)
    args = ["predict", smile_bundle, folder, "--providers", "cpu"]
    local, on_ray = run_cli(*args), run_cli(*args, "--ray")
    assert local[0] == on_ray[0] == 0, on_ray[2]
    assert on_ray[1] == local[1] and "caf\\351.png" in local[1]
    out = tmp_path / "scores.parquet"
    assert run_cli(*args, "--ray", "--output", out)[0] == 0
    rows = {r["file"]: r["file_bytes"] for r in pq.read_table(out).to_pylist()}
    assert rows == {
        f"{folder}/caf\\351.png": os.fsencode(folder) + b"/caf\xe9.png",
        f"{folder}/ok.png": None,
    }


def test_output_is_named_as_parquet(smile_bundle, tmp_path):
    code, _, err = run_cli("predict", smile_bundle, tmp_path, "--ray", "--output", "x.csv")
    assert code == 2 and "expected a Parquet file name (.parquet, .pq), found 'x.csv'" in err


def test_parquet_through_a_link_keeps_the_link_and_a_device_is_written_in_place(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from onnxedge.runtime.classifier.predictions import FileResult
    from onnxedge.runtime.distributed.parquet import write_results

    rows = [FileResult("a.png", error="not an image"), FileResult("b.png", error="empty")]
    real = tmp_path / "real.parquet"
    real.write_bytes(b"old")
    alias = tmp_path / "alias.parquet"
    alias.symlink_to(real.name)
    assert write_results(alias, rows, classes=("no", "yes"), k_classes=False) == (2, 2)
    assert alias.is_symlink() and os.readlink(alias) == real.name
    assert pq.read_table(real).column("file").to_pylist() == ["a.png", "b.png"]
    assert write_results("/dev/null", rows, classes=("no", "yes"), k_classes=False) == (2, 2)
    assert Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.parquet", "real.parquet"]


def test_predictor_takes_paths_bytes_or_arrays_without_ray(smile_bundle, tmp_path):
    files = [str(good_image(tmp_path / f"{i}.png", i)) for i in range(3)]
    predictor = BundlePredictor(str(smile_bundle), provider="cpu", batch_size=2)
    by_path = predictor({"path": np.array(files, dtype=object), "id": np.arange(3)})
    data = [Path(f).read_bytes() for f in files] + [b""]
    by_bytes = predictor({"bytes": np.array(data, dtype=object)})
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    arrays = np.stack([clf.preprocess(f) for f in files])
    by_array = predictor({"image": arrays, "error": np.array(["", "given", ""], dtype=object)})
    want = [p.probability for p in clf.predict_images(files)]
    assert by_path["probability"].tolist() == want and by_path["id"].tolist() == [0, 1, 2]
    assert by_bytes["probability"][:3].tolist() == want
    assert by_bytes["error"].tolist()[3] == "expected an image file, found an empty file (0 bytes)"
    assert np.isnan(by_array["probability"][1]) and by_array["error"][1] == "given"
    assert by_array["probability"][[0, 2]].tolist() == [want[0], want[2]]
    assert "image" not in by_array and "bytes" not in by_bytes
    with pytest.raises(KeyError, match="expected a column 'image', 'bytes' or 'path'"):
        predictor({"files": np.array(files, dtype=object)})


@pytest.mark.parametrize("address", [None, "auto", "local", "10.0.0.1:6379", "ray://head:10001"])
def test_ray_addresses(address):
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["photos/", "a.jpg", "head:port", "http://head:6379"])
def test_not_ray_addresses(address):
    with pytest.raises(ValueError, match="expected a Ray address"):
        check_address(address)


def test_a_path_taken_for_the_address_is_a_usage_error(smile_bundle, tmp_path):
    code, _, err = run_cli("predict", smile_bundle, "--ray", tmp_path)
    assert code == 2 and "put it after the paths" in err


def test_ray_only_options_need_ray(smile_bundle, tmp_path):
    code, _, err = run_cli("predict", smile_bundle, tmp_path, "--output", tmp_path / "x.parquet")
    assert code == 2 and "--output applies with --ray only" in err
    code, _, err = run_cli("predict", smile_bundle, tmp_path, "--ray", "--decode-threads", "2")
    assert code == 2 and "--decode-threads applies without --ray only" in err
    code, _, err = run_cli("predict", smile_bundle, tmp_path, "--ray", "--batch-processes", "2")
    assert code == 2 and "--batch-processes applies without --ray only" in err
    code, _, err = run_cli("predict", smile_bundle, tmp_path, "--force")  # was accepted silently
    assert code == 2 and "--force replaces the --output file; found no --output" in err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_without_ray_the_option_says_what_to_install(smile_bundle, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "ray", None)
    args = [tmp_path] if command == "predict" else ["--data", tmp_path]
    code, out, err = run_cli(command, smile_bundle, *args, "--ray")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "onnxedge: error: running on Ray needs Ray Data, which is not installed here (import of "
        "ray halted; None in sys.modules); install it with: pip install 'onnxedge[ray]'"
    ]


def test_cluster_messages_go_to_stderr_not_among_the_results(ray_cluster, capfd):
    from ray._private import worker

    from onnxedge.runtime.distributed import ray_session

    message = {"lines": ["an actor died"], "pid": "raylet", "is_err": False}
    worker.print_to_stdstream(message, ignore_prefix=False)
    assert "an actor died" in capfd.readouterr().out  # Ray's own choice
    with ray_session():
        worker.print_to_stdstream(message, ignore_prefix=False)
    out, err = capfd.readouterr()
    assert "an actor died" in err and "an actor died" not in out
