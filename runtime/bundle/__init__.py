"""The bundle: a model.onnx with its manifest, golden data and variants, as a folder.

One module per job: `reader` (`Bundle.open`, the one reader), `verify` (what opening verifies:
paths confined, hashes, external data, the model's input and output against the manifest),
`manifest` (the manifest's format), `write` (`BundleWriter`, `atomic_write_bytes`), `pack`
(`pack_bundle`: a copy with only what a device needs), `hashing`
(sha256 of files and bytes), `outputs` (the output kinds a manifest records, and their
probabilities and logits).
"""
