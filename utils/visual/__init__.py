"""Pictures of a run: curves, batches, weights, feature maps, attention, predictions; the VisualDL page.

One PNG per ``plot_*`` function, each returning a :class:`PlotResult`; ``tools/visualize.py``
draws them. Nothing here imports Paddle at import time: the tool sets the thread count first.
"""
from utils.visual.attention import attention_models, plot_attention
from utils.visual.batch import plot_batch, training_batch
from utils.visual.common import PlotResult, load_image, load_network
from utils.visual.curves import plot_curves, read_curves, run_labels
from utils.visual.features import capture_outputs, check_layers, default_feature_layers, plot_features
from utils.visual.predictions import confused_pairs, plot_confusion, plot_predictions
from utils.visual.vdl_page import screenshot
from utils.visual.weights import plot_weights

__all__ = [
    "PlotResult", "attention_models", "capture_outputs", "check_layers", "confused_pairs", "default_feature_layers",
    "load_image", "load_network", "plot_attention", "plot_batch", "plot_confusion", "plot_curves", "plot_features",
    "plot_predictions", "plot_weights", "read_curves", "run_labels", "screenshot", "training_batch",
]
