"""Inference with PyTorch: prediction on files, evaluation on folders, the fast CPU path."""

from squeezenet.inference.evaluate import EvalResult, evaluate_dataset
from squeezenet.inference.predict import Prediction, predict_paths
from squeezenet.inference.runner import InferenceRunner

__all__ = ["EvalResult", "InferenceRunner", "Prediction", "evaluate_dataset", "predict_paths"]
