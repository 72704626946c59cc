"""A stand-in stage CLI for the flow tests: the shape of `python -m hicom`, instant commands."""
