"""The three training stages (Table A1) on DeepSpeed: settings, optimiser groups, the trainer."""
