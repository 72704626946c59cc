"""Data: video and image input, the synthetic video world, conversations, mixtures, curation."""
