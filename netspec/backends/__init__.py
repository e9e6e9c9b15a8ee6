"""Lowerings of the IR: lower_torch (training), lower_onnx (inference)."""
