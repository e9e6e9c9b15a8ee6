"""Deployment: model files past the lowering (int8 quantization, external weight data)."""
