"""The pipeline definition the flows run: dvc.yaml parsed into stage commands, `pipeline:` settings,
ablation variants, cache keys. No Prefect server is needed here."""
import copy
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from flows.errors import PipelineError
from flows.hashes import ContentHashes, fingerprint
from flows.retrain import plan_run
from flows.settings import PROJECT_ROOT, PipelineSettings, load_checked_params
from flows.stages import Stage, load_stages, parse_cmd
from flows.variants import make_variant, plan_variant, variant_params, variant_params_file, write_variant_params
from hicom.core.errors import ConfigError
from hicom.data.mixture import read_mixture
from hicom.params import Params


@pytest.fixture(scope="module")
def project():
    params, settings = load_checked_params(PROJECT_ROOT / "params.yaml")
    return params, settings, {s.name: s for s in load_stages(PROJECT_ROOT)}


def test_every_dvc_yaml_stage_is_a_hicom_command_in_dependency_order(project):
    params, settings, stages = project
    names = list(stages)
    assert all(s.module == "hicom" for s in stages.values())
    order = ["synth", "tokenizer", "towers", "curate", "train_align", "train_cond_pretrain", "train_sft",
             "efficiency", "register"]
    assert [n for n in names if n in order] == order
    for benchmark in settings.benchmarks:
        assert names.index("train_sft") < names.index(f"evaluate@{benchmark}") < names.index("efficiency")
    assert stages["train_align"].argv[:3] == ("train", "--stage", "align")
    assert stages["train_align"].nproc_per_node == settings.resources["train"].processes_per_node
    assert stages["synth"].nproc_per_node == 1


def test_stages_that_read_the_trained_model_depend_on_its_folder_not_on_the_training_checkpoints(project):
    """The model folder alone is what those commands read. The training folder around it also holds checkpoints
    where train.keep_checkpoints keeps them, which differ on every run (their client state names the MLflow run):
    a dep on the whole folder reran the evaluation, efficiency and register there (a new version of the same
    model)."""
    _, _, stages = project
    readers = {name: s.argv[s.argv.index("--model") + 1] for name, s in stages.items() if "--model" in s.argv}
    assert {"efficiency", "register"} <= set(readers) and any(n.startswith("evaluate@") for n in readers)
    for name, model in readers.items():
        assert model in stages[name].deps, name
        assert not [d for d in stages[name].deps if model.startswith(d + "/")], name


def test_stage_params_follow_the_active_profile(project):
    params, _, stages = project
    assert f"profiles.{params['profile']}.train.sft" in stages["train_sft"].params


def test_a_glob_in_a_command_expands_as_the_shell_would_when_the_stage_runs(tmp_path):
    for bench in ("b", "a"):
        (tmp_path / "outputs" / "eval" / bench).mkdir(parents=True)
    stage = Stage(name="register", module="hicom", argv=("register", "--eval", "outputs/eval/*", "--x", "no/*/match"),
                  nproc_per_node=1, deps=(), params=(), outs=())
    assert stage.job_argv(tmp_path) == ["register", "--eval", "outputs/eval/a", "outputs/eval/b", "--x", "no/*/match"]


@pytest.mark.parametrize("cmd, why", [
    ("mkdir -p x && python -m hicom report", "shell operators"),
    ("python -m hicom report > out.txt", "shell operators"),
    ("bash run.sh", "no `-m MODULE`"),
    ("torchrun --nnodes 2 -m hicom train", "torchrun option '--nnodes'"),
    ("srun python -m hicom synth", "unknown launcher 'srun'"),
])
def test_commands_the_executors_cannot_run_are_refused_naming_the_stage(cmd, why):
    with pytest.raises(PipelineError, match=f"stage 'demo'.*{why}"):
        parse_cmd("demo", cmd)


def test_torchrun_commands_give_their_process_count():
    assert parse_cmd("t", ".venv/bin/torchrun --standalone --nproc_per_node=4 -m hicom train --stage sft") == \
        ("hicom", 4, ["train", "--stage", "sft"])


@pytest.mark.parametrize("section, message", [
    ({"retriez": 2}, r"pipeline\.retriez: unknown key"),
    ({"retries": "two"}, r"pipeline\.retries: expected int, got 'two'"),
    ({"retries": True}, r"pipeline\.retries: expected int"),
    ({"executor": "ssh"}, r"pipeline\.executor: 'ssh' is not one of local, slurm, kubernetes"),
    ({"benchmarks": {"videome": {"data": "v.json"}}}, r"pipeline\.benchmarks\.videome: unknown benchmark"),
    ({"schedule": {"cron": "0 3 * *"}}, r"pipeline\.schedule: '0 3 \* \*' \(UTC\) is not a valid cron"),
    ({"resources": {"train": {"processes_per_node": 0}}}, r"pipeline\.resources\.train\.processes_per_node: must be"),
    ({"resources": {"train": {"threads_per_process": 0}}}, r"pipeline\.resources\.train\.threads_per_process: must be"),
    ({"resources": {"train": {"threads_per_process": "all"}}},
     r"pipeline\.resources\.train\.threads_per_process: expected int, got 'all'"),
    ({"ablations": {"x": {"sett": {}}}}, r"pipeline\.ablations\.x\.sett: unknown key"),
])
def test_bad_pipeline_settings_fail_naming_the_key(section, message):
    with pytest.raises(PipelineError, match=message):
        PipelineSettings.from_params({"pipeline": section})


def test_threads_per_process_default_to_the_cores_over_the_processes_locally_and_params_override_them():
    """processes x threads never exceeds this machine's cores on the local executor; a number in params.yaml is
    used as it is, everywhere; on a cluster "auto" leaves the count to the job's allocation."""
    cores = len(os.sched_getaffinity(0))
    settings = PipelineSettings.from_params({"pipeline": {"resources": {
        "train": {"processes_per_node": 2, "threads_per_process": "auto"}, "evaluate": {"threads_per_process": 3}}}})
    train, evaluate, other = (settings.resources_for(c) for c in ("train", "evaluate", "towers"))
    assert train.thread_env(2, local=True) == {"OMP_NUM_THREADS": str(max(1, cores // 2)),
                                               "MKL_NUM_THREADS": str(max(1, cores // 2))}
    assert other.thread_env(1, local=True)["OMP_NUM_THREADS"] == str(cores)
    assert other.thread_env(4 * cores, local=True)["OMP_NUM_THREADS"] == "1"
    assert evaluate.thread_env(2, local=True)["OMP_NUM_THREADS"] == evaluate.thread_env(2, local=False)[
        "OMP_NUM_THREADS"] == "3"
    assert train.thread_env(2, local=False) == {}


def test_bad_params_fail_naming_the_key_before_anything_runs(tmp_path):
    base = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    cases = [
        (lambda p: p.update(curat=p.pop("curate")), "curat"),
        (lambda p: p["towers"].update(steps="many"), r"towers\.steps"),
        (lambda p: p.update(profile="huge"), "profile: 'huge' is not defined"),
    ]
    for change, message in cases:
        params = copy.deepcopy(base)
        change(params)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        with pytest.raises(ConfigError, match=message):
            load_checked_params(path)


def test_an_ablation_moves_the_stages_it_changes_and_keeps_the_others(project):
    params, settings, stages = project
    variant = make_variant(["two_stage", "no_grouping"], None)
    changed, skip = variant_params(params, settings, variant)
    planned = {s.name: s for s in plan_variant(PROJECT_ROOT, list(stages.values()), params, changed, skip, variant,
                                               "params.v.yaml").stages}
    prefix = f"outputs/variants/{variant.name}"
    assert "train_cond_pretrain" not in planned  # 2-stage: conditional pre-training skipped
    for name in ("synth", "tokenizer", "towers", "llm", "curate"):
        assert planned[name] == stages[name]  # untouched: same command, same cache key as the baseline
    sft = planned["train_sft"]
    assert sft.argv[sft.argv.index("--init-from") + 1] == f"{prefix}/train/align"
    assert sft.argv[sft.argv.index("--out") + 1] == f"{prefix}/train/sft"
    assert not sft.tracked and sft.params_file == "params.v.yaml"
    assert sft.job_argv(PROJECT_ROOT)[:2] == ["--params", "params.v.yaml"]
    efficiency = planned["efficiency"]
    assert f"{prefix}/eval/*/results.json" in efficiency.argv and f"{prefix}/eval" in efficiency.deps
    assert changed["profiles"]["tiny"]["model"]["compressor"]["local"]["grouping"] is False
    assert params["profiles"]["tiny"]["model"]["compressor"]["local"].get("grouping", True) is True


WORLD_CHANGE = {"data.synthetic.qa_per_video": 48}  # synth reruns: every stage reading outputs/world moves


def train_data(params: dict, stage: str) -> str:
    """The data mixture the active profile's training stage reads (params: profiles.<profile>.train.<stage>.data)."""
    return params["profiles"][params["profile"]]["train"][stage]["data"]


def mixture_entries(root, path: str, project=None) -> list[tuple[str, str]]:
    """(json_path, data_root) of each entry of the mixture root/path as training opens it (symlinks followed),
    relative to the project it was planned for (default root), whose outputs/ may be a symlink."""
    project = Path(project or root)

    def relative(entry: Path) -> str:
        entry, outputs = entry.resolve(), (project / "outputs").resolve()
        return (f"outputs/{entry.relative_to(outputs)}" if entry.is_relative_to(outputs)
                else os.path.relpath(entry, project.resolve()))
    return [(relative(e.json_path), relative(e.data_root)) for e in read_mixture(root / path)]


def laid_out(tmp_path, mixtures: dict[str, str]):
    """The planned copies of data mixtures written under tmp_path as the flow writes them under the project."""
    for path, text in mixtures.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path


def test_a_variant_that_remakes_the_world_trains_on_it_through_its_own_copies_of_the_data_mixtures(project, tmp_path):
    params = project[0]
    plan = plan_run(PROJECT_ROOT, None, WORLD_CHANGE, None)
    prefix = f"outputs/variants/{plan.variant.name}"
    stages = {s.name: s for s in plan.stages}
    copies = {stage: train_data(plan.params, stage) for stage in ("align", "cond_pretrain", "sft")}
    for stage, path in copies.items():
        assert path.startswith(f"{prefix}/"), f"train_{stage} reads the baseline's data mixture {path}"
        assert path in stages[f"train_{stage}"].deps and train_data(params, stage) not in stages[f"train_{stage}"].deps
    root = laid_out(tmp_path, plan.mixtures)  # planning writes nothing; retrain writes them with the params file
    assert mixture_entries(root, copies["sft"], PROJECT_ROOT) == [(f"{prefix}/world/sft.jsonl", f"{prefix}/world")]
    assert read_mixture(root / copies["sft"])[0].split_turns is True  # the other fields as they were
    assert mixture_entries(root, copies["cond_pretrain"], PROJECT_ROOT) == [
        (f"{prefix}/curated/cond_pretrain-*.jsonl", f"{prefix}/world")]
    assert mixture_entries(root, copies["align"], PROJECT_ROOT) == [
        (f"{prefix}/world/align_images.jsonl", f"{prefix}/world"), (f"{prefix}/world/align_videos.jsonl", f"{prefix}/world")]


def test_a_variant_that_changes_only_a_training_setting_reads_the_original_data_mixtures(project):
    params = project[0]
    plan = plan_run(PROJECT_ROOT, None, {f"profiles.{params['profile']}.train.sft.epochs": 1}, None)
    sft = next(s for s in plan.stages if s.name == "train_sft")
    assert sft.params_file == variant_params_file(plan.variant)  # it reruns, on the baseline's data
    assert plan.mixtures == {}
    for stage in ("align", "cond_pretrain", "sft"):
        assert train_data(plan.params, stage) == train_data(params, stage)
    assert train_data(params, "sft") in sft.deps


def a_project(tmp_path, outputs_elsewhere: bool):
    """tmp_path/project, its outputs/ a symlink to a folder beside it (another disk, say) if outputs_elsewhere."""
    root = tmp_path / "project"
    root.mkdir()
    if outputs_elsewhere:
        (tmp_path / "disk" / "outputs").mkdir(parents=True)
        (root / "outputs").symlink_to(tmp_path / "disk" / "outputs")
    return root


def mixtures_in(tmp_path, sft_mixture: str | None):
    """tmp_path as a project's data mixtures: the project's own, tiny_sft.yaml replaced (None: removed)."""
    shutil.copytree(PROJECT_ROOT / "configs" / "data", tmp_path / "configs" / "data")
    sft = tmp_path / "configs" / "data" / "tiny_sft.yaml"
    sft.unlink()
    if sft_mixture is not None:
        sft.write_text(sft_mixture)
    return tmp_path


@pytest.mark.parametrize("outputs_elsewhere", [False, True], ids=["outputs-folder", "outputs-symlink"])
def test_a_variant_copy_of_a_data_mixture_moves_only_the_moved_paths_and_keeps_every_other_field(
        project, tmp_path, outputs_elsewhere):
    """The copy's entries lead where the original's do, or to the variant's outputs, also when outputs/ is a symlink
    to another disk and an entry lies outside outputs/."""
    params, settings, stages = project
    root = mixtures_in(a_project(tmp_path, outputs_elsewhere), textwrap.dedent("""\
        notes: kept as it is
        datasets:
          - {json_path: ../../outputs/world/sft.jsonl, sampling_strategy: "first:5", split_turns: true}
          - {json_path: ../../data/qa/qa.json, data_root: ../../data/qa/videos, sampling_strategy: "random:10%"}
          - {json_path: /elsewhere/qa.json, data_root: ../../outputs/world/videos}
        """))
    variant = make_variant(None, WORLD_CHANGE)
    changed, skip = variant_params(params, settings, variant)
    plan = plan_variant(root, list(stages.values()), params, changed, skip, variant, "params.v.yaml")
    prefix = f"outputs/variants/{variant.name}"
    copy = train_data(plan.params, "sft")
    assert not (root / copy).exists()  # planned, not written
    laid_out(root, plan.mixtures)
    assert mixture_entries(root, copy) == [(f"{prefix}/world/sft.jsonl", f"{prefix}/world"),
                                           ("data/qa/qa.json", "data/qa/videos"),
                                           (os.path.relpath("/elsewhere/qa.json", root), f"{prefix}/world/videos")]
    written = yaml.safe_load((root / copy).read_text())
    assert written["notes"] == "kept as it is"
    assert [{k: v for k, v in e.items() if k not in ("json_path", "data_root")} for e in written["datasets"]] == [
        {"sampling_strategy": "first:5", "split_turns": True}, {"sampling_strategy": "random:10%"}, {}]
    assert written["datasets"][2]["json_path"] == "/elsewhere/qa.json"


@pytest.mark.parametrize("outputs_elsewhere", [False, True], ids=["outputs-folder", "outputs-symlink"])
def test_a_variants_params_file_under_outputs_resolves_the_towers_and_data_mixtures_as_params_yaml_does(
        project, tmp_path, outputs_elsewhere):
    """hicom reads the towers' paths and the training stages' data mixtures relative to the params file; the variant's
    file lies three folders down, in outputs/ (a symlink to another disk, say), and each command reads the same
    files as from params.yaml."""
    params, _, _ = project
    root = a_project(tmp_path, outputs_elsewhere)
    plan = plan_run(PROJECT_ROOT, ["no_injection"], WORLD_CHANGE, None)
    name = write_variant_params(root, plan.variant, plan.params, plan.mixtures)
    assert name == variant_params_file(plan.variant) == f"outputs/variants/{plan.variant.name}/params.yaml"
    variant, baseline = Params.load(root / name), Params(params, root / "params.yaml")
    sft = variant.train("tiny", "sft").data
    assert sft == str((root / train_data(plan.params, "sft")).resolve()) and Path(sft).is_file()
    assert variant.train("tiny", "align").lr_compressor == baseline.train("tiny", "align").lr_compressor
    assert variant.profile("paper-7b").vision.path == baseline.profile("paper-7b").vision.path == str(
        (root / params["profiles"]["paper-7b"]["model"]["vision"]["path"]).resolve())
    assert variant.profile("tiny").compressor != baseline.profile("tiny").compressor  # the ablation itself


@pytest.mark.parametrize("mixture, message", [
    (None, "mixture file not found"),
    ("datasets: [{json_path: a.json\n", "not valid YAML"),
    ("datasets: [{json_path: ../../outputs/world/sft.jsonl, weight: 2}]",
     r"datasets\[0\]: unknown field\(s\) \['weight'\]"),
    ("- ../../outputs/world/sft.jsonl", "expected a top-level `datasets:` list"),
], ids=["missing", "bad-yaml", "unknown-field", "no-datasets"])
def test_a_data_mixture_that_cannot_be_read_fails_the_plan_naming_the_file(project, tmp_path, mixture, message):
    params, settings, stages = project
    root = mixtures_in(tmp_path, mixture)
    variant = make_variant(None, WORLD_CHANGE)
    changed, skip = variant_params(params, settings, variant)
    with pytest.raises(PipelineError, match=rf"stage 'train_sft': data mixture configs/data/tiny_sft\.yaml .*"
                                            rf"{re.escape(str(root))}/configs/data/tiny_sft\.yaml: {message}"):
        plan_variant(root, list(stages.values()), params, changed, skip, variant, "params.v.yaml")


def test_unknown_ablations_and_misspelt_overrides_fail_naming_them(project):
    params, settings, _ = project
    with pytest.raises(PipelineError, match="ablation 'no_groupin' is not defined.*no_grouping"):
        variant_params(params, settings, make_variant(["no_groupin"], None))
    with pytest.raises(ConfigError, match="unknown field.*'groupin'"):
        variant_params(params, settings, make_variant(None, {"profiles.tiny.model.compressor.local.groupin": False}))
    with pytest.raises(PipelineError, match="'profiles.tiny.modle' is not a key"):
        variant_params(params, settings, make_variant(None, {"profiles.tiny.modle.preset": "paper"}))
    with pytest.raises(PipelineError, match="'pipeline.retries' cannot vary per run"):
        variant_params(params, settings, make_variant(None, {"pipeline.retries": 0}))


def test_the_cache_key_follows_the_params_slice_and_dep_content_only(tmp_path):
    (tmp_path / "code.py").write_text("v1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    stage = Stage(name="s", module="hicom", argv=("s",), nproc_per_node=1, deps=("code.py", "data"),
                  params=("a.lr",), outs=())
    params = {"a": {"lr": 1, "other": 1}, "b": 1}

    def key(p):
        return fingerprint(stage, p, ContentHashes(tmp_path))

    base = key(params)
    assert key({**params, "b": 2}) == base
    assert key({"a": {"lr": 1, "other": 2}, "b": 1}) == base
    assert key({"a": {"lr": 2, "other": 1}, "b": 1}) != base
    (tmp_path / "data" / "x.txt").write_text("y")
    data_changed = key(params)
    assert data_changed != base
    (tmp_path / "code.py").write_text("v2")
    assert key(params) not in (base, data_changed)


def test_a_missing_dependency_is_named_with_its_stage(tmp_path):
    stage = Stage(name="s", module="hicom", argv=("s",), nproc_per_node=1, deps=("nowhere",), params=(), outs=())
    with pytest.raises(PipelineError, match="stage 's': dependency nowhere does not exist"):
        fingerprint(stage, {}, ContentHashes(tmp_path))


def test_prefect_yaml_resolves_to_the_schedule_in_params(project, monkeypatch):
    """What `prefect deploy` does with prefect.yaml: apply_values in the environment `python -m flows deploy` sets."""
    from prefect.utilities.templating import apply_values

    from flows.cli import WORK_POOLS, deployment_env

    _, settings, _ = project
    for key, value in deployment_env({}).items():
        monkeypatch.setenv(key, value)
    config = apply_values(yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text()), {}, remove_notset=False)
    assert {d["work_pool"]["name"] for d in config["deployments"]} == set(WORK_POOLS)
    for deployment in config["deployments"]:
        assert deployment["entrypoint"] == "flows.retrain.retrain"
        schedule = deployment["schedules"][0]
        assert (schedule["cron"], schedule["timezone"]) == (settings.schedule_cron, settings.schedule_timezone)


def test_the_kubernetes_deployments_stage_jobs_run_the_image_its_flow_pod_runs(monkeypatch):
    """The flow pod gets the image `make deploy` was given (HICOM_IMAGE) and passes the same to its stage Jobs
    (KubernetesSettings, in the pod's environment), not the executor's default `hicom-ops:latest`."""
    from prefect.utilities.templating import apply_values

    from flows.cli import deployment_env
    from flows.executors.k8s import KubernetesSettings

    for key, value in deployment_env({"HICOM_IMAGE": "registry.example/hicom-ops:abc123"}).items():
        monkeypatch.setenv(key, value)
    config = apply_values(yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text()), {}, remove_notset=False)
    [pod] = [d["work_pool"]["job_variables"] for d in config["deployments"] if d["name"] == "retrain-kubernetes"]
    assert pod["image"] == "registry.example/hicom-ops:abc123"
    monkeypatch.delenv("HICOM_IMAGE")
    for key, value in pod["env"].items():
        monkeypatch.setenv(key, value)
    assert KubernetesSettings().image == pod["image"]


def test_every_ablation_in_params_gives_each_training_stage_something_to_train(project, tmp_path):
    """An ablation's params must hold together (no_injection has no injection parameters: lr_injection null),
    or its run would fail stages in, not at the start."""
    from hicom.model.build import build_model
    from hicom.params import Params
    from hicom.train.config import STAGES
    from hicom.train.optim import configure_trainable

    params, settings, stages = project
    profile = params["profile"]
    for name in settings.ablations:
        variant = make_variant([name], None)
        changed, skip = variant_params(params, settings, variant)
        planned = plan_variant(PROJECT_ROOT, list(stages.values()), params, changed, skip, variant,
                               "params.v.yaml").stages
        assert any(not s.tracked for s in planned), f"ablation {name} changes no stage"
        path = PROJECT_ROOT / f"params.test-{name}.yaml"  # beside params.yaml: relative paths resolve the same
        try:
            path.write_text(yaml.safe_dump(changed))
            model = build_model(Params.load(path).profile(profile))
            for stage in STAGES:
                if stage not in skip and f"train_{stage}" not in skip:
                    assert configure_trainable(model, STAGES[stage], Params.load(path).train(profile, stage))
        finally:
            path.unlink()


def test_a_project_that_is_not_a_dvc_project_or_lacks_dvc_yaml_is_refused_naming_it(tmp_path):
    """Before: DVC's NotDvcRepoError surfaced as a traceback from `python -m flows ablations --project-dir`."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "tests/flow_standin", project)
    (project / "stages.yaml").rename(project / "dvc.yaml")
    with pytest.raises(PipelineError, match=rf"{re.escape(str(project))}: not a DVC project .*`dvc init`"):
        plan_run(project, [], {}, None)
    (project / "dvc.yaml").unlink()
    with pytest.raises(PipelineError, match=rf"{re.escape(str(project / 'dvc.yaml'))}: not found"):
        load_stages(project)
