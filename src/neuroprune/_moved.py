"""Old import paths of modules that moved in the layout by stage; they keep working for one
release with a :class:`DeprecationWarning`.

A meta-path finder answers for ``neuroprune.<old name>`` by importing the new module and
registering it under the old name too, so ``import neuroprune.schedule`` gives the very module
``neuroprune.core.loop``.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from neuroprune.plan import PruningPlan
    >>> PruningPlan.__module__, caught[0].category.__name__
    ('neuroprune.core.plan', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module name (below ``neuroprune.``) -> new module name (below ``neuroprune.``)
MOVED = {
    "errors": "core.errors",
    "config": "core.config",
    "config_file": "core.config_file",
    "policy": "core.policy",
    "graph.groups": "core.groups",
    "plan": "core.plan",
    "selection": "core.selection",
    "target": "core.target",
    "quality": "core.quality",
    "remainder": "core.remainder",
    "atomic": "core.atomic",
    "schedule": "core.loop",
    "scoring": "core.criteria",
    "scoring.registry": "core.criteria.registry",
    "scoring.aggregate": "core.criteria.aggregate",
    "scoring.combine": "core.criteria.combine",
    "scoring.taylor": "core.criteria.taylor",
    "scoring.weights": "core.criteria.weights",
    "scoring.activations": "core.criteria.activations",
    "scoring.obs": "core.criteria.obs",
    "scoring.decoder": "core.criteria.decoder",
    "graph": "torch.graph",
    "graph.attention_ops": "torch.graph.attention_ops",
    "graph.context": "torch.graph.context",
    "graph.discover": "torch.graph.discover",
    "graph.ops": "torch.graph.ops",
    "graph.sizes": "torch.graph.sizes",
    "graph.torch_blocks": "torch.graph.torch_blocks",
    "graph.trace": "torch.graph.trace",
    "surgery": "torch.layers",
    "surgery.base": "torch.layers.base",
    "surgery.linear": "torch.layers.linear",
    "surgery.conv": "torch.layers.conv",
    "surgery.norm": "torch.layers.norm",
    "surgery.rnn": "torch.layers.rnn",
    "surgery.attention": "torch.layers.attention",
    "surgery.heads": "torch.layers.heads",
    "surgery.embedding": "torch.layers.embedding",
    "surgery.passthrough": "torch.layers.passthrough",
    "surgery.hf_conv1d": "torch.layers.hf_conv1d",
    "surgery.registry": "torch.layers.registry",
    "surgery.apply": "torch.surgery",
    "surgery.masks": "torch.masks",
    "recover": "torch.recover",
    "recover.distill": "torch.recover.distill",
    "recover.finetune": "torch.recover.finetune",
    "recover.precision": "torch.recover.precision",
    "recover.reconstruct": "torch.recover.reconstruct",
    "recover.rollback": "torch.recover.rollback",
    "stats": "torch.stats",
    "report.metrics": "torch.metrics",
    "cost_model": "torch.cost_model",
    "modes": "torch.modes",
    "probe": "torch.probe",
    "fingerprint": "torch.fingerprint",
    "io": "torch.io",
    "checkpoint": "torch.checkpoint",
    "export": "torch.export",
    "adapters": "torch.adapters",
    "adapters.hf": "hf.adapter",
    "adapters.hf_families": "hf.families",
    "task": "tasks.classification",
    "text_task": "tasks.text",
    "lm_task": "tasks.language_model",
    "lm_generate": "tasks.generate",
    "zoo": "models.zoo",
    "lm_zoo": "models.lm_zoo",
    "sensitivity": "analysis.sensitivity",
    "budget": "analysis.budget",
    "explain": "analysis.explain",
    "gradual": "analysis.gradual",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        return importlib.import_module(self.new_name)

    def exec_module(self, module):  # the new module has run already
        pass


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds ``neuroprune.<old>`` for every old name in :data:`MOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "neuroprune" or old not in MOVED:
            return None
        new_name = "neuroprune." + MOVED[old]
        warnings.warn(f"{fullname} moved to {new_name}; the old path stops working in the next release",
                      DeprecationWarning, stacklevel=3)
        is_package = importlib.util.find_spec(new_name).submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name), is_package=is_package)


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once.

    First, because the ordinary path finder would otherwise find ``neuroprune.scoring.combine``
    itself, through the ``__path__`` of the aliased package, and run the module a second time.
    """
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
