"""Face-detector training (``ferkit train-detector | evaluate-detector | export-detector``).

``data`` (annotations.json, WIDER FACE, FDDB and VOC readers; numpy), ``config`` (every setting),
``models`` (BlazeFace-style and RetinaFace-MobileNet-0.25 torch nets, shipped ONNX weights loaded
into the latter), ``anchors`` (matching, encoding, multibox loss), ``loop`` (training),
``evaluate`` (AP, recall, FP/img, ms/img; torch-free) and ``export`` (ONNX with parity and card).
Everything is trained in the RetinaFace head contract, so the core's retinaface decoder runs it.
Importing this package does not import torch.
"""
