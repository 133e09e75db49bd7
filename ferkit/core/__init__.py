"""The inference core: everything between an image and its typed result, with no torch.

``recognizer`` is the one pipeline (detect → crop/align → quality gate → classify) that every
front end calls; ``settings`` holds every default of it. Beside it: ``images`` (the one decode
path), ``detection/`` (face detectors), ``preprocess`` (crops), ``quality`` (the readability
gate), ``classification`` (emotion models), ``runtime`` (the inference sessions: OpenVINO or
onnxruntime), ``results`` (the typed result), ``labels``, and the outputs people look at
(``drawing``, ``plots``, ``writers``).
"""
