"""Training errors: each ends as one clear line on the command line."""

from squeezenet.errors import SqueezeNetError


class TrainingError(SqueezeNetError):
    """Bad training options, an unusable checkpoint, or a run that cannot go on."""


class NonFiniteLossError(TrainingError):
    """The loss (or the gradient) became NaN or infinite; the last good checkpoint is kept."""
