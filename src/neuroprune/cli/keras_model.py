"""``neuroprune prune --model keras:PATH.keras --data ...``: the Keras model and its task for the CLI.

The model is read with plain ``keras.saving.load_model`` (its weights are in the file, so
``--weights`` does not apply); ``--train-epochs N`` fine-tunes it first with ``model.fit``. Image
data stored ``(N, C, H, W)`` is handed to the model channels last.
"""

from __future__ import annotations

import argparse
from typing import Any

from neuroprune.cli.common import load_data_for
from neuroprune.cli.console import print_err
from neuroprune.core.errors import ConfigError
from neuroprune.models.spec import parse_model_spec


def keras_model_and_task(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model of ``--model keras:PATH`` and its classification task on ``--data`` (Keras is
    imported only for such a model)."""
    from neuroprune.keras.io import load_keras_model
    from neuroprune.keras.task import KerasClassificationTask

    if getattr(args, "weights", None):
        raise ConfigError([f"--weights does not apply to {args.model}: a .keras file holds its own weights"])
    model = load_keras_model(parse_model_spec(args.model)[1])
    data = load_data_for(args.model, args)
    task = KerasClassificationTask(data, batch_size=args.batch_size, calibration_samples=args.calibration_samples,
                                   seed=args.seed).bind(model)
    epochs = args.train_epochs or 0
    if epochs:
        print_err(f"training {args.model} for {epochs} epochs on {data.name}")
        task.finetune(model, epochs=epochs)
    return model, task
