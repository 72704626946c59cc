"""HICom-248K curation: score videos against category descriptions, select, write instruction-description pairs."""
