"""Error types that the command line turns into one clear line and a non-zero exit.

Every failure a user can cause (bad file, bad image, wrong arguments) raises a
``SqueezeNetError`` subclass with a message that names the culprit, so the CLI never
has to show a traceback for it.
"""


class SqueezeNetError(Exception):
    """Base class of all errors caused by input (files, images, arguments)."""


class WeightsError(SqueezeNetError):
    """A weights file is missing, truncated, corrupted, foreign or does not fit the model."""


class ImageError(SqueezeNetError):
    """A file is not a readable image."""


class DataError(SqueezeNetError):
    """A dataset path is missing, empty or laid out in a way we cannot use."""


class ModelError(SqueezeNetError):
    """An unknown architecture, bad argument, or an input the model cannot take."""


class MissingExtraError(SqueezeNetError):
    """An optional extra (matplotlib, onnx, ...) is not installed: what needs it is skipped or refused."""


class DeployError(SqueezeNetError):
    """Export, quantization or a deployment runtime failed because of its input or setup."""


class TrainingError(SqueezeNetError):
    """Bad training options, an unusable checkpoint, or a run that cannot go on."""


class NonFiniteLossError(TrainingError):
    """The loss (or the gradient) became NaN or infinite; the last good checkpoint is kept."""
