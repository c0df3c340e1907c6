"""Export-side graph transforms of onnxedge."""
