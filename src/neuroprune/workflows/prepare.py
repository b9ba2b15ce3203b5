"""Get a classifier ready to prune: its data, the model built from its spec, weights, a probe, training.

Example:
    >>> model, task = classifier_and_task("zoo:mlp", "digits", train_epochs=0, progress=False)
    >>> type(model).__name__, task.metric_name
    ('Sequential', 'accuracy')
"""

from __future__ import annotations

import torch.nn as nn

from neuroprune.core.errors import ConfigError
from neuroprune.data import DataSplits, load_data
from neuroprune.models.spec import build_from_spec, model_layout
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.io import load_weights
from neuroprune.torch.probe import probe_model
from neuroprune.torch.recover.finetune import finetune
from neuroprune.workflows.listener import Listener

#: Training epochs of a classifier given without weights (and without an explicit number of epochs).
DEFAULT_TRAIN_EPOCHS = 30


def data_for_model(model_spec: str, data_spec: str, *, layout: str | None = None, image_size: int | None = None,
                   seed: int = 0, standardize: bool = False) -> DataSplits:
    """Load ``data_spec`` (``digits`` or ``npz:PATH``) in the layout the model of ``model_spec`` wants
    (the zoo's layout and image size unless given; model files: flat)."""
    if data_spec.startswith("text:"):
        raise ConfigError([f"text data ({data_spec}) needs a Hugging Face model: --model hf:DIR_OR_NAME"])
    layout, image_size = model_layout(model_spec, layout, image_size)
    return load_data(data_spec, layout=layout, seed=seed, image_size=image_size, standardize=standardize)


def classifier_and_task(model_spec: str, data_spec: str = "digits", *, layout: str | None = None,
                        image_size: int | None = None, seed: int = 0, standardize: bool = False,
                        batch_size: int = 64, calibration_samples: int = 1024, weights: str | None = None,
                        allow_pickle: bool = False, train_epochs: int | None = None, progress: bool = True,
                        listener: Listener | None = None) -> tuple[nn.Module, ClassificationTask]:
    """The model of ``model_spec`` with ``weights`` loaded and its classification task on ``data_spec``.

    Without weights the model is trained for ``train_epochs`` (default :data:`DEFAULT_TRAIN_EPOCHS`;
    with weights 0). The model runs once on a probe batch first
    (:func:`neuroprune.torch.probe.probe_model`), so a model and data that do not fit fail here, in
    one sentence, before any training or pruning.
    """
    listener = listener or Listener()
    data = data_for_model(model_spec, data_spec, layout=layout, image_size=image_size, seed=seed,
                          standardize=standardize)
    model = build_from_spec(model_spec, data)
    if weights:
        load_weights(model, weights, allow_pickle=allow_pickle)
    probe_model(model, data)
    task = ClassificationTask(data, batch_size=batch_size, calibration_samples=calibration_samples, seed=seed)
    epochs = train_epochs if train_epochs is not None else (0 if weights else DEFAULT_TRAIN_EPOCHS)
    if epochs:
        listener.note(f"training {model_spec} for {epochs} epochs on {data.name}")
        task.bind(model)
        finetune(model, task, epochs=epochs, progress=progress, desc="training")
    return model, task
