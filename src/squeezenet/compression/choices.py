"""What compression can be asked for, and what it does unasked: one home for the command and the library.

``squeezenet compress`` offers these choices and names these defaults in its help;
``CompressionConfig`` and ``compress`` take the same values, so that the library does unasked
what the command does (they once differed: the command chose output-aware codes, the library
nearest values). PyTorch-free: the command line's parser imports this module, and the codec
only for the names of its coders and position schemes.
"""

from __future__ import annotations

from squeezenet.weights.sqz_codec import CODER_NAMES, POS_NAMES

AUTO = "auto"  # the codec tries every coder or position scheme and keeps the smallest
NEAREST = "nearest"
OUTPUT_AWARE = "output-aware"
METHODS = (NEAREST, OUTPUT_AWARE)
# codes chosen for what each layer outputs keep more predictions per byte (benchmarks/results/compress.md)
DEFAULT_METHOD = OUTPUT_AWARE
CODERS = (AUTO, *dict.fromkeys(CODER_NAMES.values()))
# "all" is no choice: the codec stores a tensor without any zero that way by itself
POSITION_SCHEMES = (AUTO, *(name for name in dict.fromkeys(POS_NAMES.values()) if name != "all"))

DEFAULT_BITS = 8
# the data-free preset: these layer kinds (``pipeline.layer_kind``) at 7 bits, chosen on half A of
# imagenet-samples for output-aware codes; the nearest method's preset, that of format version 1,
# gives the fire expand 3x3 layers and the last layer 7 bits instead
DATA_FREE_KIND_BITS = (("stem", 7), ("expand3x3", 7))
NEAREST_LARGE_BITS = 7
SYNTHETIC_IMAGES = 64  # calibrate the output-aware method when no image is given

HOLDOUT = 0.2  # share of the command's --data held back to measure fidelity on, never calibrated on
TRAIN_STEPS = 0  # codebook and bias training after calibration: none unless asked

# what ``squeezenet train --update-of`` may train (compression.updates): the classifier; the shared
# values, biases and classifier (masks and indices frozen); everything
UPDATE_LEVELS = ("head", "codebooks", "full")
DEFAULT_UPDATE_LEVEL = "codebooks"
