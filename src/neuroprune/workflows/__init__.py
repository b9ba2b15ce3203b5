"""Workflows: the library functions behind the CLI's subcommands.

Each one strings the stages together the way a command does, so a script gets the same result
as the command line without argparse:

* :func:`~neuroprune.workflows.prepare.classifier_and_task`: build (and train) a classifier for its data;
* :func:`~neuroprune.workflows.prune_and_report.prune_and_report`: budget search, the pruning loop,
  the report, the saved folder and the explanation;
* :mod:`~neuroprune.workflows.causal_lm`: protected blocks and the generation check of a causal LM;
* :func:`~neuroprune.workflows.train_prune.train_prune`: train while gradually pruning;
* :func:`~neuroprune.workflows.demo.run_demo`: the built-in demo;
* :mod:`~neuroprune.workflows.outputs`: the one place that writes a workflow's outputs.

A workflow tells its caller what happens through a :class:`~neuroprune.workflows.listener.Listener`
(silent by default; the CLI's prints), and never parses arguments or chooses exit codes.
"""
