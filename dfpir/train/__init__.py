"""Training: ``python -m dfpir.train`` and the pieces it is made of.

- [`loop`][dfpir.train.loop]: the run, top to bottom (processes, data, model, optimiser, the loop,
  validation) and the command line, [`main`][dfpir.train.loop.main]; [`run`][dfpir.train.loop.run] trains from a config;
- [`config`][dfpir.train.config]: the configuration ([`TrainConfig`][dfpir.train.config.TrainConfig], presets, TOML files,
  overrides, [`resolve`][dfpir.train.config.resolve]) and what a resumed run may change;
- [`sampling`][dfpir.train.sampling]: which samples each step trains on, for any number of processes
  and DataLoader workers;
- [`state`][dfpir.train.state]: the training state in and out of checkpoints, ``train.init`` weights;
- [`classifier`][dfpir.train.classifier]: the degradation classifier's clean class and calibration;
- [`refit_classifier`][dfpir.train.refit_classifier]: ``python -m dfpir.train.refit_classifier``, the
  classifier of a weights file retrained alone on larger crops;
- [`preflight`][dfpir.train.preflight]: the training files' headers, read before the first step;
- [`interrupts`][dfpir.train.interrupts]: Ctrl-C at step boundaries;
- [`precision`][dfpir.train.precision]: fp32, bf16 and fp16 autocast.
"""

from .config import PRESETS, SAFE_ON_RESUME, TrainConfig, resolve, resume_config
from .loop import (
    Dist,
    Joint,
    Trainer,
    build_data,
    format_table,
    lr_factor,
    main,
    pick_device,
    prompt_bank,
    restoration_loss,
    run,
    setup_distributed,
    validate,
)
from .precision import autocast, check_precision
from .preflight import check_training_files
from .sampling import SampleOrder, batch_indices, collate, micro_batches
from .state import flatten_state, load_initial_weights, state_mismatch, unflatten_state

__all__ = [
    "PRESETS",
    "SAFE_ON_RESUME",
    "TrainConfig",
    "resolve",
    "resume_config",
    "Dist",
    "Joint",
    "Trainer",
    "build_data",
    "format_table",
    "lr_factor",
    "main",
    "pick_device",
    "prompt_bank",
    "restoration_loss",
    "run",
    "setup_distributed",
    "validate",
    "autocast",
    "check_precision",
    "check_training_files",
    "SampleOrder",
    "batch_indices",
    "collate",
    "micro_batches",
    "flatten_state",
    "load_initial_weights",
    "state_mismatch",
    "unflatten_state",
]
