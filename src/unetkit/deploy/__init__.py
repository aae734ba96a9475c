"""Deployment outside the training environment.

* :mod:`unetkit.deploy.onnx_export` - ``unetkit export MODEL_DIR --onnx OUT_DIR`` (needs torch and onnx).
* :mod:`unetkit.deploy.onnx_predict` - prediction from that folder with numpy, scipy and onnxruntime
  only (no torch).

Nothing is imported here, so that importing the predictor does not pull in the exporter's torch.
"""
