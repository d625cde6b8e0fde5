"""Datasets and caches, training, sliding-window inference, evaluation."""
