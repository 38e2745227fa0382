"""Experiments: compare (every method side by side on one model) and the methods it runs."""
