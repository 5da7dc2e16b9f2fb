"""Export a trained run for deployment and run the exported model.

Nothing here imports Paddle at import time: the tools set the thread count first.
"""
from utils.deploy.export import PARITY_IMAGES, check_output_dir, export_network, export_run, load_run_network, parity_check
from utils.deploy.inference_yml import PADDLEX_MODEL_NAME, build_preprocess, inference_config, preprocess_ops
from utils.deploy.inputs import collect_inputs, format_table
from utils.deploy.predictor import Predictor, load_predictor, resolve_model_dir

__all__ = [
    "PADDLEX_MODEL_NAME", "PARITY_IMAGES", "Predictor", "build_preprocess", "check_output_dir", "collect_inputs",
    "export_network", "export_run", "format_table", "inference_config", "load_predictor", "load_run_network",
    "parity_check", "preprocess_ops", "resolve_model_dir",
]
