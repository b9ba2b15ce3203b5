"""The backend seam and the task protocol: registry, deprecated aliases, declared capabilities,
and a loop that neither imports torch nor probes for methods."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from neuroprune.core.backend import backend_for, get_backend, register_backend
from neuroprune.core.errors import ConfigError
from neuroprune.core.tasks import CAPABILITIES, Task, bind_task, capabilities_of
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.backend import TorchBackend

CORE = Path(__file__).resolve().parents[1] / "src" / "neuroprune" / "core"
SEAM_MODULES = ("loop.py", "loop_state.py", "result.py", "scoring_pass.py", "tasks.py", "budget.py", "backend.py")


@pytest.mark.parametrize("name", SEAM_MODULES)
def test_the_loop_and_its_modules_neither_import_torch_nor_probe_capabilities(name):
    source = (CORE / name).read_text()
    assert not re.search(r"^\s*(import torch|from torch)", source, re.M)
    assert name == "backend.py" or "nn.Module" not in source  # backend.py names it in a message
    if name in ("loop.py", "loop_state.py", "result.py", "scoring_pass.py"):  # the loop never probes
        assert not re.search(r"\b(hasattr|getattr)\(", source)
    for probe in ("residual_sums", "extra_files", "token_mask", ".bind(", ".finetune("):
        assert name in ("tasks.py", "backend.py") or probe not in source


def test_torch_models_get_the_fx_backend_and_plans_find_it_by_name():
    backend = backend_for(nn.Linear(2, 2))
    assert isinstance(backend, TorchBackend) and backend.name == "fx" and get_backend("fx") is backend


def test_hugging_face_models_get_the_hf_subclass():
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel(transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=32, vocab_size=20))
    backend = backend_for(model)
    assert backend.name == "hf" and isinstance(backend, TorchBackend)
    assert "config.json" in backend.extra_files(model) and backend_for(nn.Linear(2, 2)).name == "fx"


def test_a_backend_name_is_registered_once():
    with pytest.raises(ConfigError, match="a backend named 'fx' is already registered"):
        register_backend(TorchBackend())


def test_old_adapter_names_still_work_with_a_deprecation_warning():
    from neuroprune.torch.adapters import ModelAdapter, adapter_for, get_adapter

    with pytest.warns(DeprecationWarning, match="use neuroprune.core.backend.backend_for"):
        assert adapter_for(nn.Linear(2, 2)).name == "fx"
    with pytest.warns(DeprecationWarning, match="get_backend"):
        assert isinstance(get_adapter("fx"), ModelAdapter)


def test_tasks_declare_their_capabilities():
    from neuroprune.data import load_digits
    from neuroprune.tasks.language_model import LMTask
    from neuroprune.tasks.text import TextTask

    task = ClassificationTask(load_digits())
    assert isinstance(task, Task) and capabilities_of(task) == {"binds_to_model", "fingerprint"}
    assert {"token_mask", "own_recovery"} <= TextTask.capabilities and "own_recovery" in LMTask.capabilities
    assert TextTask.capabilities | LMTask.capabilities <= set(CAPABILITIES)


def test_an_undeclared_capability_still_counts_for_one_release_with_a_warning_and_a_wrong_one_is_refused():
    class Legacy:
        bound = None

        def bind(self, model):
            self.bound = model

    with pytest.warns(DeprecationWarning, match=r"Legacy has bind but does not declare binds_to_model"):
        assert capabilities_of(Legacy()) == {"binds_to_model"}
    assert bind_task(Legacy(), "m").bound == "m"

    class Wrong:
        capabilities = frozenset({"teleports"})

    with pytest.raises(ConfigError, match="known capabilities: binds_to_model"):
        capabilities_of(Wrong())


def test_a_task_without_a_capability_is_never_asked_for_it():
    class Plain:
        capabilities = frozenset()

    bind_task(Plain(), object())  # no bind method, not declared: nothing to call


def test_text_task_inputs_go_by_keyword_so_gpt2_latency_is_measured():
    transformers = pytest.importorskip("transformers")
    from test_hf import make_sentences, make_tokenizer

    from neuroprune.tasks.text import TextTask
    from neuroprune.torch.metrics import measure_model

    torch.manual_seed(0)
    model = transformers.GPT2Model(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=60,
                                                           n_positions=32)).eval()
    task = TextTask(make_sentences(), make_tokenizer(), batch_size=4, val_samples=4, test_samples=4)
    inputs = task.make_input(3)
    assert set(inputs) == {"input_ids", "attention_mask"}
    metrics = measure_model(model, task.make_input, batch_sizes=(1, 2), runs=1, warmup=0)
    assert metrics.flops > 0 and set(metrics.latency_ms) == {"batch_1", "batch_2"}
