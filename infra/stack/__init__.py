"""The team stack on this host (`python -m infra.stack up|down|status|env`)."""
