"""`python -m onnxedge.runtime` and the console script `onnxedge` run the `onnxedge` command.

A Ctrl-C while the command's modules load (numpy, the engines: about half a second) is the same
one line and exit status 130 as one while the command runs, not a traceback of the import."""

import sys


def main() -> None:
    try:
        from onnxedge.runtime.cli import main as command
    except KeyboardInterrupt:
        print("onnxedge: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    command()


if __name__ == "__main__":
    main()
