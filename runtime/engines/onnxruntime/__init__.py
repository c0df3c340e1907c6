"""ONNX Runtime as an engine: `session` makes its inference sessions (execution providers,
`make_session` on exactly the one asked for, `short_reason`)."""
