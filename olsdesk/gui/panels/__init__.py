"""One widget per view: experiment, curves, soft labels, reliability, embedding."""
