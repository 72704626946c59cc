"""The command registry: one module per command, the CLI assembled from it, the flows asking it."""
import argparse
import subprocess
import sys

import pytest

from hicom.cli import build_parser
from hicom.commands import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_has_the_registry_shape(name):
    module = COMMANDS[name]
    assert module.NAME == name and module.__name__ == f"hicom.commands.{name.replace('-', '_')}"
    assert isinstance(module.HELP, str) and module.HELP
    assert isinstance(module.TRACKED, bool)
    assert callable(module.add_arguments) and callable(module.run)


def test_tracked_commands_are_those_that_take_a_parent_run():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, module in COMMANDS.items():
        options = {o for action in subparsers.choices[name]._actions for o in action.option_strings}
        assert module.TRACKED == ("--parent-run-id" in options), name


def test_profile_means_only_a_params_profile():
    assert "efficiency" in COMMANDS and "profile" not in COMMANDS
    args = build_parser().parse_args(["register", "--model", "m", "--efficiency", "p.json", "--out", "o"])
    assert args.efficiency == "p.json"


def test_the_flow_asks_the_command_registry(monkeypatch):
    from flows import retrain

    assert retrain.tracks_itself("hicom", "train") and not retrain.tracks_itself("hicom", "synth")
    assert not retrain.tracks_itself("hicom", "no-such-command")
    monkeypatch.setattr(COMMANDS["synth"], "TRACKED", True)
    assert retrain.tracks_itself("hicom", "synth")


def test_help_of_a_light_command_does_not_import_torch():
    code = ("import sys\nfrom hicom.cli import main\ntry:\n    main(['promote', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_reading_params_imports_neither_torch_nor_transformers():
    """Every command reads params.yaml first; the light ones (promote, compare, pipeline-report) need no model, so
    reading it, the profiles' model settings included, must not cost the seconds of importing torch."""
    code = ("import sys\nfrom hicom.params import Params\nparams = Params.load()\n"
            "params.profile('tiny'); params.profile('paper-7b')\n"
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_flow_process_imports_neither_torch_nor_transformers():
    """The retrain flow runs every stage as a subprocess; its own process (make run's, a Prefect worker's) only
    orchestrates, and importing torch there cost seconds of every `make run`, cached or not."""
    code = ("import sys\nimport flows.retrain\nimport flows.ablations\n"
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
