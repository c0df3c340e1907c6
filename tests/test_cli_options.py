"""The shared option callbacks (`onnxedge.runtime.cli.options`): what they accept, and that bad
input is a usage error (exit 2) saying what was expected and what was found."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from onnxedge.runtime.cli.options import name_list, positive_ints, provider_list, split_commas


@click.command()
@click.option("--sizes", default="1,8", callback=positive_ints)
@click.option(
    "--providers", default=None, callback=provider_list(("cpu", "cuda"), default=("cpu",))
)
@click.option("--require", multiple=True, callback=provider_list(allow_empty=True))
@click.option(
    "--peers",
    default="eager",
    callback=name_list(("eager", "compile"), what="peer", allow_none=True),
)
def _cmd(sizes, providers, require, peers):
    click.echo(repr((sizes, providers, require, peers)))


def _run(*args):
    return CliRunner().invoke(_cmd, list(args))


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        ((), ((1, 8), ("cpu",), (), ("eager",))),
        (("--sizes", " 64, 1,64,"), ((64, 1), ("cpu",), (), ("eager",))),
        (("--providers", "CUDA,cpu,cuda"), ((1, 8), ("cuda", "cpu"), (), ("eager",))),
        (
            ("--require", "cuda", "--require", "tensorrt,cuda"),
            ((1, 8), ("cpu",), ("cuda", "tensorrt"), ("eager",)),
        ),
        (("--peers", "none"), ((1, 8), ("cpu",), (), ())),
        (("--peers", "compile,Eager"), ((1, 8), ("cpu",), (), ("compile", "eager"))),
    ],
)
def test_accepted(args, parsed):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(parsed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--sizes", "0,8"),
            "expected comma-separated integers of at least 1 such as 1,8,64, found 0",
        ),
        (("--sizes", "-3"), "found -3"),
        (
            ("--sizes", "8,two"),
            "expected comma-separated integers of at least 1 such as 1,8,64, found 'two'",
        ),
        (("--sizes", " , "), "expected at least one integer of at least 1, such as 1,8,64"),
        (("--providers", "tpu"), "unknown provider 'tpu'; expected some of: cpu, cuda"),
        (("--providers", "tensorrt"), "unknown provider 'tensorrt'; expected some of: cpu, cuda"),
        (("--providers", ","), "expected a comma-separated list of providers: cpu, cuda"),
        (("--require", "cpu,npu"), "unknown provider 'npu'; expected some of: cpu, cuda, tensorrt"),
        (("--peers", "jax"), "unknown peer 'jax'; expected some of: eager, compile (or none)"),
        (("--peers", "none,eager"), "unknown peer 'none'"),
    ],
)
def test_rejected_as_usage_errors(args, message):
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_provider_choices_must_be_known_providers():
    with pytest.raises(ValueError, match="not execution providers"):
        provider_list(("cpu", "tpu"))


def test_split_commas():
    assert split_commas(None) == []
    assert split_commas(" a, ,b,") == ["a", "b"]
    assert split_commas(("a,b", "c")) == ["a", "b", "c"]
