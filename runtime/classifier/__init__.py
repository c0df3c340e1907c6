"""The classifier: a bundle's model predicting files, images and arrays.

One module per job: `classifier` (`Classifier`), `session` (its inference session: provider
auto/cpu/cuda, the one used, its settings), `files` (`predict_files`' pipeline), `args` (the
checks of its arguments), `predictions` (what it returns), `preprocess` (images to arrays, as the
manifest says), `decode` (decoding images on worker threads, in order).
"""
