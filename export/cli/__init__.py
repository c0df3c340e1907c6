"""Export-side commands, one module each: `onnxedge export` (`export.py`) and `onnxedge simplify`
(`simplify.py`), registered by name in `onnxedge.runtime.cli.COMMANDS`. Torch is imported only
when a command runs, so these modules load where torch is absent."""
