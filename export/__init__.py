"""The export side of onnxedge (`onnxedge.export`): PyTorch to a simplified, checked ONNX bundle."""
