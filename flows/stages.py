"""dvc.yaml's stages as the flow runs them: DVC resolves and orders them, each command is parsed into an argv.

dvc.yaml is the one table of stage commands: DVC resolves it (templating, `foreach`) and orders it (its
graph); the flow parses each resolved `python -m hicom ...` / `torchrun ... -m hicom ...` command into
the argv an executor runs. `dvc repro` and the flow therefore run the same commands with the same
deps, params and outs, and a stage's cache key is built from exactly what DVC tracks for it.
"""
from __future__ import annotations

import glob
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from flows.errors import PipelineError

_GLOB_CHARS = re.compile(r"[*?\[]")

# The hicom commands the flow looks for among the stages, or runs itself after them: one place to rename one.
EVALUATE_COMMAND = "evaluate"  # its metrics files are the report's results
EFFICIENCY_COMMAND = "efficiency"  # its profile.json is the report's efficiency table
REGISTER_COMMAND = "register"  # its JSON out names the new model version (promotion reads it)
PROMOTE_COMMAND = "promote"  # the promotion gate, a flow-only step
PIPELINE_REPORT_COMMAND = "pipeline-report"  # the run's report, a flow-only step


@dataclass(frozen=True)
class Stage:
    """One stage command, as the flow runs it.

    argv: what follows `python -m <module>` (relative paths are relative to the project).
    params_file: None for params.yaml; an ablation variant passes its own file with `--params`.
    tracked: its outs are the baseline's, versioned by DVC (dvc commit + push after it runs).
    """

    name: str
    module: str
    argv: tuple[str, ...]
    nproc_per_node: int
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    params_file: str | None = None
    tracked: bool = True

    @property
    def command(self) -> str:
        """The hicom subcommand (train, evaluate, ...), which picks the stage's resources."""
        return self.argv[0]

    def job_argv(self, workdir: Path) -> list[str]:
        """argv with `--params` for a variant and globs expanded as the shell running a dvc.yaml cmd would."""
        argv = ["--params", self.params_file] if self.params_file else []
        for token in self.argv:
            matches = sorted(glob.glob(token, root_dir=workdir)) if _GLOB_CHARS.search(token) else []
            argv.extend(matches or [token])
        return argv


def load_stages(root: Path) -> list[Stage]:
    """The project's dvc.yaml stages in run order (DVC's graph; file order among independent stages)."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    dvc_yaml = (root / "dvc.yaml").resolve()
    if not dvc_yaml.is_file():
        raise PipelineError(f"{dvc_yaml}: not found; the pipeline's stages are defined there")
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise PipelineError(f"{root}: not a DVC project (no .dvc directory here or above); `dvc init` it, as the "
                            "flow commits and pushes each stage's outputs with DVC") from None
    with repo:
        stages = [s for s in repo.index.stages if isinstance(s, PipelineStage) and Path(s.path).resolve() == dvc_yaml]
        position = {s: i for i, s in enumerate(stages)}
        graph = repo.index.graph.reverse(copy=True).subgraph(stages)
        ordered = nx.lexicographical_topological_sort(graph, key=lambda s: position[s])
        result = []
        for s in ordered:
            module, nproc, argv = parse_cmd(s.name, s.cmd)
            params = []
            for dep in s.deps:
                if isinstance(dep, ParamsDependency):
                    if Path(dep.def_path).name != "params.yaml":
                        raise PipelineError(f"dvc.yaml stage {s.name!r}: params from {dep.def_path} are not "
                                            "supported (the stage CLIs read params.yaml)")
                    params.extend(dep.params or [])
            result.append(Stage(
                name=s.name, module=module, argv=tuple(argv), nproc_per_node=nproc,
                deps=tuple(str(d.def_path) for d in s.deps if not isinstance(d, ParamsDependency)),
                params=tuple(params), outs=tuple(str(o.def_path) for o in s.outs),
                persist=tuple(str(o.def_path) for o in s.outs if o.persist),
                metrics=tuple(str(o.def_path) for o in s.outs if o.metric)))
    return result


def parse_cmd(stage: str, cmd: str) -> tuple[str, int, list[str]]:
    """(module, processes per node, argv) of `[...]python -m M ARGS` or `[...]torchrun [OPTS] -m M ARGS`."""
    def fail(why: str) -> PipelineError:
        return PipelineError(f"dvc.yaml stage {stage!r}: {why}; the flow runs `python -m hicom ...` or `torchrun "
                             f"--nproc_per_node N -m hicom ...` commands through an executor, got: {cmd}")

    try:
        tokens = shlex.split(cmd)
    except ValueError as exc:
        raise fail(f"cannot split the command ({exc})") from None
    if any(t in ("&&", "||", ";", "|", ">", ">>", "<") for t in tokens):
        raise fail("shell operators are not supported")
    if len(tokens) < 3 or "-m" not in tokens:
        raise fail("no `-m MODULE`")
    launcher = Path(tokens[0]).name
    m = tokens.index("-m")
    if m + 1 >= len(tokens) or m + 2 >= len(tokens):
        raise fail("no command after `-m MODULE`")
    module, argv, options = tokens[m + 1], tokens[m + 2:], tokens[1:m]
    if re.fullmatch(r"python(3(\.\d+)?)?", launcher):
        if options:
            raise fail(f"interpreter options {options} are not supported")
        return module, 1, argv
    if launcher != "torchrun":
        raise fail(f"unknown launcher {tokens[0]!r}")
    nproc = 1
    i = 0
    while i < len(options):
        option = options[i]
        name, _, value = option.partition("=")
        if name in ("--nproc_per_node", "--nproc-per-node"):
            if not value:
                i += 1
                value = options[i] if i < len(options) else ""
            if not value.isdigit() or int(value) < 1:
                raise fail(f"--nproc_per_node {value!r} is not a positive integer")
            nproc = int(value)
        elif option != "--standalone":
            raise fail(f"torchrun option {option!r} is not supported (executors choose how to launch)")
        i += 1
    return module, nproc, argv

