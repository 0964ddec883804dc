"""Measuring tools: task interference, ablations, channel orders, masked attention, the blur bound.

- [`ablations`][dfpir.analysis.ablations]: the same weights with one switch off ([`ABLATIONS`][dfpir.analysis.ABLATIONS], [`ablate`][dfpir.analysis.ablations.ablate],
  [`build_model`][dfpir.analysis.ablations.build_model]);
- [`interference`][dfpir.analysis.interference]: gradient conflicts between degradations ([`task_batches`][dfpir.analysis.interference.task_batches],
  [`measure_interference`][dfpir.analysis.interference.measure_interference], [`Interference`][dfpir.analysis.interference.Interference]);
- [`orders`][dfpir.analysis.orders]: each DGPB's channel order per prompt and its masked attention
  ([`channel_orders`][dfpir.analysis.orders.channel_orders], [`order_similarity`][dfpir.analysis.orders.order_similarity], [`attention_map`][dfpir.analysis.orders.attention_map]);
- [`plots`][dfpir.analysis.plots]: their figures (matplotlib, an optional dependency, imported when drawing);
- [`blur_bound`][dfpir.analysis.blur_bound]: what linear filters undo of the synthetic motion blur ([`deblur_bound`][dfpir.analysis.blur_bound.deblur_bound]);
- [`cli`][dfpir.analysis.cli]: ``python -m dfpir.analysis interference | blur-bound``.
"""

from .ablations import ABLATIONS, ablate, build_model, identity_orders_
from .anchors import (
    bm3d_available,
    denoise_bm3d,
    denoise_nlm,
    wiener_true_kernel,
    FixedWiener,
    min_filter,
    box_mean,
    guided_filter,
    dark_channel,
    estimate_airlight,
    Dehazed,
    dark_channel_prior,
)
from .blur_bound import WIENER_NSRS, deblur_bound
from .cli import build_parser, main, run_blur_bound, run_interference
from .interference import (
    Batches,
    Interference,
    clean_crops,
    crop_boxes,
    conflict_fraction,
    cosine_from_gram,
    cosine_matrix,
    interference_from_gradients,
    layer_of,
    mean_offdiagonal,
    measure_interference,
    task_batches,
    task_gradients,
)
from .orders import attention_map, channel_orders, order_similarity, rank_correlation
from .plots import plot_attention_map, plot_channel_orders, plot_interference, plot_layer_matrices, plot_matrix

__all__ = [
    # ablations
    "ABLATIONS",
    "ablate",
    "build_model",
    "identity_orders_",
    # interference
    "Batches",
    "Interference",
    "clean_crops",
    "crop_boxes",
    "conflict_fraction",
    "cosine_from_gram",
    "cosine_matrix",
    "interference_from_gradients",
    "layer_of",
    "mean_offdiagonal",
    "measure_interference",
    "task_batches",
    "task_gradients",
    # orders and attention
    "attention_map",
    "channel_orders",
    "order_similarity",
    "rank_correlation",
    # plots
    "plot_attention_map",
    "plot_channel_orders",
    "plot_interference",
    "plot_layer_matrices",
    "plot_matrix",
    # classical anchors
    "bm3d_available",
    "denoise_bm3d",
    "denoise_nlm",
    "wiener_true_kernel",
    "FixedWiener",
    "min_filter",
    "box_mean",
    "guided_filter",
    "dark_channel",
    "estimate_airlight",
    "Dehazed",
    "dark_channel_prior",
    # the deblurring bound
    "WIENER_NSRS",
    "deblur_bound",
    # the command line
    "build_parser",
    "main",
    "run_blur_bound",
    "run_interference",
]
