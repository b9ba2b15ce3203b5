"""Files of a pruned Keras model: write a folder atomically, load it back, load a ``.keras`` file.

A folder holds ``model.keras`` (loadable by plain ``keras.saving.load_model``, no custom objects),
``model.safetensors`` (``"layer/path/weight"`` -> array, written with ``safetensors.numpy``),
``plan.json`` (adapter ``"keras"``; replays onto the original model) and ``report.json``, plus any
``extra`` files (``report.html``). ``plan.json`` is written last and records the sha256 of
``model.safetensors``.

Example:
    >>> import keras, numpy as np, tempfile, os
    >>> from neuroprune.core.plan import PruningPlan
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> folder = os.path.join(tempfile.mkdtemp(), "out")
    >>> save(folder, model, PruningPlan(adapter="keras"), {"note": "example"})
    >>> sorted(os.listdir(folder))
    ['model.keras', 'model.safetensors', 'plan.json', 'report.json']
    >>> load(folder).get_layer("fc").units
    3
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from neuroprune.core.atomic import output_folder, write_files
from neuroprune.core.errors import ConfigError, PlanError
from neuroprune.core.plan import PruningPlan
from neuroprune.keras.metrics import weight_arrays

KERAS_FILE, MODEL_FILE, PLAN_FILE, REPORT_FILE = "model.keras", "model.safetensors", "plan.json", "report.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_saved_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / PLAN_FILE).is_file() and (folder / MODEL_FILE).is_file()


def save(folder: str | os.PathLike, model: Any, plan: PruningPlan, report: dict | None = None, *,
         overwrite: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Write ``model.keras``, ``model.safetensors``, ``report.json``, ``extra`` and ``plan.json`` atomically."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    with output_folder(folder, is_saved_folder, overwrite=overwrite) as staging:
        model.save(staging / KERAS_FILE)
        save_file(weight_arrays(model), str(staging / MODEL_FILE), metadata={"format": "neuroprune-keras"})
        write_files(staging, {REPORT_FILE: report or {}, **(extra or {})})
        plan_data = {**plan.to_dict(), "weights_sha256": _sha256(staging / MODEL_FILE)}
        (staging / PLAN_FILE).write_text(json.dumps(plan_data, indent=2))


def load_keras_model(path: str | os.PathLike) -> Any:
    """A model from a ``.keras`` file (or a saved folder's ``model.keras``), with plain Keras."""
    import keras

    path = Path(path)
    if path.is_dir():
        path = path / KERAS_FILE
    if path.suffix != ".keras" or not path.is_file():
        raise ConfigError([f"{str(path)!r} is not a .keras file; give a model saved with model.save('name.keras') "
                           "or a folder written by neuroprune"])
    return keras.saving.load_model(path)


def read_plan(folder: str | os.PathLike) -> PruningPlan:
    data = json.loads((Path(folder) / PLAN_FILE).read_text())
    plan = PruningPlan.from_dict(data)
    if plan.adapter != "keras":
        raise PlanError(f"the plan in {str(folder)!r} was written by the {plan.adapter!r} backend, not for Keras")
    expected = data.get("weights_sha256")
    if expected and expected != _sha256(Path(folder) / MODEL_FILE):
        raise PlanError(f"{MODEL_FILE} in {str(folder)!r} does not match its plan (sha256 differs)")
    return plan


def load(folder: str | os.PathLike, original: Any = None) -> Any:
    """The pruned model of a saved folder: ``model.keras``, or with ``original`` the plan replayed onto
    it and the weights read from ``model.safetensors`` (no Keras file read at all)."""
    if original is None:
        return load_keras_model(folder)
    from safetensors.numpy import load_file

    from neuroprune.keras.layers import weight_names
    from neuroprune.keras.paths import leaf_layers
    from neuroprune.keras.surgery import apply_keep

    model = apply_keep(original, read_plan(folder).keep())
    arrays = load_file(str(Path(folder) / MODEL_FILE))
    for path, layer in leaf_layers(model):
        names = [f"{path}/{name}" for name in weight_names(layer)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise PlanError(f"{MODEL_FILE} has no weight {missing[0]!r}; is it a save of another model?")
        layer.set_weights([np.asarray(arrays[n]) for n in names])
    return model
