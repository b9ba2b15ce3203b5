"""The ``neuroprune`` command line: one module per subcommand."""
