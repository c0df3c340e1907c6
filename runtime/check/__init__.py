"""`onnxedge check`: is a model one the device core can run and explain?

`check` holds the full check (onnx.checker, one symbolic batch dimension, a GAP head); `head`
walks the graph back from the output to the head it judges.
"""
