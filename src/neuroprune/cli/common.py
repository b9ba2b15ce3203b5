"""What several subcommands share: checking outputs before any work, and getting a classifier ready.

The options live in :mod:`neuroprune.cli.arguments`, their translation into a config in
:mod:`neuroprune.cli.settings`, printing in :mod:`neuroprune.cli.console`, model specs in
:mod:`neuroprune.models.spec` and the work itself in :mod:`neuroprune.workflows`; the names
below that moved there stay importable from here.

Example:
    >>> parse_model_spec("zoo:mlp")
    ('zoo', 'mlp')
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn as nn

from neuroprune.cli.arguments import (DISTILL_LR, INT_MINIMUMS, add_data_arguments,  # noqa: F401 - old import path
                                      add_pruning_arguments, check_int_options)
from neuroprune.cli.console import PrintingListener, print_err, warnings_as_lines  # noqa: F401 - old import path
from neuroprune.cli.outputs import check_output_file, check_output_folder, input_paths
from neuroprune.cli.settings import config_from_args  # noqa: F401 - old import path
from neuroprune.core.atomic import recover_folder
from neuroprune.data import DataSplits
from neuroprune.models.spec import (MAX_ZOO_CLASSES, build_from_file, build_from_spec,  # noqa: F401 - old import path
                                    model_layout, parse_model_spec)
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch import distributed
from neuroprune.torch.io import is_saved_folder, load_weights
from neuroprune.workflows import prepare
from neuroprune.workflows.prune_and_report import data_entry as _data_entry


def check_output(args: argparse.Namespace) -> None:
    """Check ``--out`` and ``--json`` before any work is done (see :mod:`neuroprune.cli.outputs`)."""
    inputs = input_paths(args)
    if args.out:
        # a crash between the renames of an earlier --overwrite; under torchrun only rank 0 touches the folder
        distributed.on_writer(recover_folder, args.out, is_saved_folder)
        check_output_folder(args.out, "--out", inputs=inputs, overwrite=args.overwrite, owned=is_saved_folder)
    if getattr(args, "json", None):
        check_output_file(args.json, "--json", inputs=inputs, output_folder=args.out)


def load_data_for(spec: str, args: argparse.Namespace) -> DataSplits:
    """``--data`` in the layout the model of ``spec`` wants (``--layout``, ``--image-size``, ``--seed``,
    ``--standardize``)."""
    check_int_options(args)
    return prepare.data_for_model(spec, args.data, layout=args.layout, image_size=args.image_size, seed=args.seed,
                                  standardize=getattr(args, "standardize", False))


def data_entry(task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The report's ``"data"`` entry: spec, whether it was standardised, split sizes."""
    return _data_entry(task, args.data)


def prepare_weights(model: nn.Module, weights: str | None, allow_pickle: bool) -> None:
    if weights:
        load_weights(model, weights, allow_pickle=allow_pickle)


def trained_model_and_task(args: argparse.Namespace, progress: bool) -> tuple[nn.Module, ClassificationTask]:
    """The model of ``--model`` with ``--weights`` loaded (without them: trained for ``--train-epochs``,
    default 30) and its classification task on ``--data``
    (:func:`neuroprune.workflows.prepare.classifier_and_task`)."""
    check_int_options(args)
    return prepare.classifier_and_task(
        args.model, args.data, layout=args.layout, image_size=args.image_size, seed=args.seed,
        standardize=getattr(args, "standardize", False), batch_size=args.batch_size,
        calibration_samples=args.calibration_samples, weights=args.weights, allow_pickle=args.allow_pickle,
        train_epochs=args.train_epochs, progress=progress, listener=PrintingListener(args))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
