"""The command registry: one module per `python -m hicom COMMAND`, each with NAME, HELP, TRACKED,
add_arguments(parser) and run(args, params) -> exit code. hicom.cli assembles its parser from COMMANDS;
flows ask TRACKED (the command logs its own MLflow run under --parent-run-id) instead of reading argparse.

Modules import heavy libraries (torch, transformers) inside run(), so `--help` stays quick.
"""
from hicom.commands import (
    compare,
    curate,
    efficiency,
    evaluate,
    llm,
    pipeline_report,
    promote,
    register,
    report,
    smoke,
    synth,
    tokenizer,
    towers,
    train,
)

COMMANDS = {module.NAME: module for module in (report, smoke, synth, tokenizer, towers, llm, curate, train, evaluate,
                                               efficiency, register, promote, pipeline_report, compare)}
