"""The onnxruntime backend: ONNX models (see backend.py)."""
