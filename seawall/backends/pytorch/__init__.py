"""The pytorch backend: TorchScript models (see backend.py)."""
