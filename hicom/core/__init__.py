"""The base layer: file I/O, errors and shared types. It imports nothing else from `hicom`."""
