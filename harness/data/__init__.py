"""Datasets, label splits, decoded-image caches, transforms and resumable loaders."""
