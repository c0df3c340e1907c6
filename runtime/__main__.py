"""`python -m onnxedge.runtime` runs the `onnxedge` command."""

from onnxedge.runtime.cli import main

if __name__ == "__main__":
    main()
