"""Recovering quality after pruning: fine-tuning and retrain-free reconstruction."""
