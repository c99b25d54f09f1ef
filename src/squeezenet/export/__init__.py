"""Deployment: ONNX (fp32, int8) and TorchScript export, with the weights' metadata inside.

onnx and onnxruntime are the optional ``deploy`` extra; every module here imports them
lazily (``common.require``) and raises ``DeployError`` with an install hint when they are
missing. ``formats`` holds the fixed facts the command line's parser needs, without torch.
"""
