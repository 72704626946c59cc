"""dvc.yaml code deps derived from imports: a stage whose imports reach a file its deps do not cover would
reuse a cached result after that file changes."""
import textwrap

import pytest

from flows.code_deps import (
    covering_paths,
    stage_code,
    stage_code_files,
    write_code_deps,
)
from flows.settings import PROJECT_ROOT


def test_every_stage_lists_code_deps_covering_what_its_command_imports():
    stale = {s.name: f"{len(s.uncovered)} files, e.g. {', '.join(s.uncovered[:3])}"
             for s in stage_code(PROJECT_ROOT) if s.uncovered}
    assert not stale, f"dvc.yaml stages whose imports reach files their deps miss (run `python -m flows deps " \
                      f"--write`): {stale}"


def test_dvc_yaml_code_deps_are_the_derived_ones():
    """`python -m flows deps --check`: no stage lists more code than it imports either (it would rerun needlessly)."""
    stages = stage_code(PROJECT_ROOT)
    assert {s.name: sorted(s.listed) for s in stages} == {s.name: sorted(s.derived) for s in stages}


def _package(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def pkg(tmp_path):
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/__main__.py": "from pkg.cli import main\n",
        "pkg/cli.py": "import argparse\nfrom pkg.core import errors\n\ndef main():\n    from pkg import base\n",
        "pkg/base.py": "",
        "pkg/core/__init__.py": "", "pkg/core/errors.py": "", "pkg/core/unused.py": "",
        "pkg/commands/__init__.py": "from pkg.commands import train, report\n",
        "pkg/commands/train.py": "import pkg.core\n\ndef run():\n    from ..data.reader import read\n",
        "pkg/commands/report.py": "def run():\n    from pkg import plots\n",
        "pkg/data/__init__.py": "from .reader import read\n",
        "pkg/data/reader.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import plots\n"
                             "def read():\n    from . import text\n",
        "pkg/data/text.py": "", "pkg/plots.py": "",
    })
    return tmp_path


def test_imports_are_followed_through_functions_relative_imports_and_package_inits(pkg):
    files = {p.relative_to(pkg).as_posix() for p in stage_code_files(pkg, "pkg", "train")}
    assert files == {"pkg/__init__.py", "pkg/__main__.py", "pkg/cli.py", "pkg/base.py", "pkg/core/__init__.py",
                     "pkg/core/errors.py", "pkg/commands/__init__.py", "pkg/commands/train.py",
                     "pkg/commands/report.py", "pkg/data/__init__.py", "pkg/data/reader.py", "pkg/data/text.py"}
    # report's function-level import of plots runs only for report; TYPE_CHECKING imports never run
    assert "pkg/plots.py" in {p.relative_to(pkg).as_posix() for p in stage_code_files(pkg, "pkg", "report")}


def test_a_folder_is_listed_only_when_all_its_files_are_needed(pkg):
    files = stage_code_files(pkg, "pkg", "train")
    assert covering_paths(files, pkg, "pkg") == [
        "pkg/__init__.py", "pkg/__main__.py", "pkg/base.py", "pkg/cli.py", "pkg/commands", "pkg/core/__init__.py",
        "pkg/core/errors.py", "pkg/data"]


def test_write_replaces_only_the_code_deps_keeping_comments_and_layout(pkg):
    dvc_yaml = pkg / "dvc.yaml"
    dvc_yaml.write_text(textwrap.dedent("""\
        # the stages
        stages:
          train:  # trains
            cmd: python -m pkg train --stage a
              --out outputs/model
            deps:
              - outputs/world  # data
              - pkg/commands/train.py
              - configs/x.yaml
            outs:
              - outputs/model
          evaluate:
            foreach: ${benchmarks}
            do:
              cmd: torchrun --nproc_per_node ${n} -m pkg report --out outputs/eval/${key}
              deps:
                - ${item.data}
              outs:
                - outputs/eval/${key}
        """))
    stages = stage_code(pkg)
    assert {s.name: s.uncovered[:1] for s in stages} == {"train": ["pkg/__init__.py"],
                                                         "evaluate": ["pkg/__init__.py"]}
    assert write_code_deps(pkg, stages) == ["train", "evaluate"]
    text = dvc_yaml.read_text()
    assert "    cmd: python -m pkg train --stage a\n      --out outputs/model\n" in text
    assert "      - outputs/world  # data\n      - pkg/__init__.py\n" in text
    assert "      - pkg/data\n      - configs/x.yaml\n" in text
    assert "        - ${item.data}\n        - pkg/__init__.py\n" in text and "        - pkg/plots.py\n" in text
    assert all(not s.uncovered and set(s.listed) == set(s.derived) for s in stage_code(pkg))
    assert write_code_deps(pkg, stage_code(pkg)) == []


def test_code_that_runs_at_start_up_imports_hicom_at_module_level():
    """Modules every command loads at start-up (params, the settings sections) are followed only through their
    module-level imports; an import inside one of their functions (a dataclass check run by Params) would be a
    dependency no stage lists. Command modules are exempt: each stage follows its own command's functions."""
    import ast

    from flows.code_deps import imported_files

    hicom = PROJECT_ROOT / "hicom"
    startup = imported_files([hicom / "__main__.py", hicom / "cli.py"], PROJECT_ROOT, "hicom", function_level=False)
    hidden = []
    for path in sorted(startup - {hicom / "__main__.py", hicom / "cli.py"}):
        if path.parent == hicom / "commands":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("hicom"):
                        hidden.append(f"{path.relative_to(PROJECT_ROOT)}:{inner.lineno} {inner.module}")
    assert hidden == []
