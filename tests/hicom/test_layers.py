"""The layers of hicom/ (docs/architecture.md): each room imports only the rooms below it.

Read statically (every import statement, function-level ones included), so a lazy import cannot hide a
dependency that goes up the layers or sideways between model and data.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HICOM = Path(__file__).resolve().parents[2] / "hicom"

# room -> the rooms it may import. A room is a subpackage or a top-level module of hicom.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "model": {"core"},
    "data": {"core"},
    "tracking": set(),
    "plots": set(),
    "report": {"model"},
    "smoke": {"core", "model"},
    "curate": {"core", "data"},
    "pretrain": {"core", "data", "model"},
    "train": {"core", "data", "model", "tracking"},
    "evaluate": {"core", "data", "model", "tracking"},
    "efficiency": {"core", "data", "model", "plots", "report"},
    "serving": {"core", "data", "evaluate", "model"},
    "gate": {"core", "evaluate"},
    "registry": {"core", "data", "gate", "serving", "tracking"},
    "pipeline_report": {"core", "efficiency", "gate", "plots", "registry"},
    "ablations": {"core", "evaluate", "gate", "pipeline_report", "plots"},
    "params": {"core", "curate", "data", "efficiency", "evaluate", "gate", "model", "pretrain", "train"},
}
ALLOWED["commands"] = set(ALLOWED) | {"params"}
ALLOWED["cli"] = {"commands", "core", "params"}
ALLOWED["__main__"] = {"cli"}
ORCHESTRATION = ("flows", "prefect", "dvc", "infra")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hicom" and len(parts) > 1 else None


def _rooms_of_tree() -> set[str]:
    return {p.stem if p.is_file() else p.name for p in HICOM.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))}


def test_every_room_of_hicom_has_a_place_in_the_layer_table():
    assert _rooms_of_tree() == set(ALLOWED)


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it_and_never_orchestration(room):
    base = HICOM / room
    files = sorted(base.rglob("*.py")) if base.is_dir() else [HICOM / f"{room}.py"]
    wrong = []
    for path in files:
        for module in _imports(path):
            target = _room(module)
            if module.split(".")[0] in ORCHESTRATION:
                wrong.append(f"{path.relative_to(HICOM.parent)} imports {module} (orchestration)")
            elif target in ALLOWED and target != room and target not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(HICOM.parent)} imports {module}")
    assert wrong == []


def test_the_layer_check_catches_an_import_up_the_layers(tmp_path, monkeypatch):
    """The check is not vacuous: a data module that imports the model is reported."""
    fake = tmp_path / "hicom"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from hicom.model.build import build_model\n")
    monkeypatch.setattr(__import__(__name__), "HICOM", fake)
    with pytest.raises(AssertionError, match="hicom.model.build"):
        test_a_room_imports_only_the_rooms_below_it_and_never_orchestration("data")
