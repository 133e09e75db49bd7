"""Training side (needs ``ferkit[train]``: torch): it makes the models the core runs.

``config`` (every training knob), ``data`` (FER2013 folders/CSV, augmentation), ``architectures``
(the networks, named like ``fernet_m``), ``loop`` (``ferkit train``), ``distill`` (teacher targets), ``export`` (ONNX
with parity and accuracy checks), ``evaluation`` and ``metrics`` (``ferkit evaluate``),
``onnx_weights`` (shipped ONNX members back into torch for fine-tuning).
"""
