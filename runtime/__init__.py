"""The torch-free side of onnxedge: bundles, checks, sessions and the CLI (`onnxedge.runtime`).

Nothing in this package imports torch; it runs on the target with onnxruntime and numpy.
"""
