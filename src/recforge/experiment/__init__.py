"""Experiments: run several models on one split and compare them."""
