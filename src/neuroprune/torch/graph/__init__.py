"""Dependency discovery: which parameter slices share one neuron and must be cut together."""
