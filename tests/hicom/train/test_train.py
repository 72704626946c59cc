"""Training stages: trainable sets and learning rates, DeepSpeed across two processes, resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import SiglipConfig, SiglipModel

from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig, generate_world
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.model.build import build_model
from hicom.model.checkpoint import save_compressor, save_model
from hicom.model.compressor import HIComCompressor
from hicom.model.settings import compressor_from_preset
from hicom.params import PARAMS_FILE, Params
from hicom.train.config import STAGES
from hicom.train.optim import build_optimizer, configure_trainable
from hicom.train.trainer import complete_checkpoints
from tests.tree_bytes import files_that_differ

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("stage,groups", [
    ("align", {"compressor": 1e-3}),
    ("cond_pretrain", {"compressor": 1e-4, "injection": 1e-3}),
    ("sft", {"compressor": 1e-5, "injection": 1e-5, "llm": 1e-5}),
])
def test_each_stage_trains_exactly_its_parameters_at_table_a1_rates(stage, groups):
    profile = Params.load().profile("paper-7b")
    model = build_model(profile, device="meta")
    cfg = Params.load().train("paper-7b", stage)
    found = configure_trainable(model, STAGES[stage], cfg)
    assert {g.name: g.lr for g in found} == groups
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    in_groups = {n if g.name == "llm" else f"projector.{n}" for g in found for n, _ in g.params}
    assert trainable == in_groups
    assert not any(n.startswith(("vision_tower.", "text_tower.")) for n in trainable)  # towers always frozen
    injection = {n for n in trainable if "guide_injector" in n}
    assert bool(injection) == (stage != "align")
    assert any(n.startswith("language_model.") for n in trainable) == (stage == "sft")


def test_an_empty_injection_group_is_an_error_not_a_silent_no_op(tiny_profile):
    import dataclasses
    release = dataclasses.replace(tiny_profile, compressor=compressor_from_preset(
        "release", {"global": {"head_dim": 32}}))
    model = build_model(release)
    cfg = Params.load().train("tiny", "cond_pretrain")
    with pytest.raises(ConfigError, match="parameter group 'injection' .* is empty"):
        configure_trainable(model, STAGES["cond_pretrain"], cfg)


def test_the_optimizer_steps_a_group_at_once_with_the_bits_of_the_per_tensor_loop(tiny_profile):
    """build_optimizer asks AdamW for foreach (one call per operation over a group's tensors) because it is faster on
    the CPU; it must train the same weights as the per-tensor loop, torch's default there, or every stage would
    train another model than its recorded one."""
    cfg = Params.load().train("tiny", "sft")
    weights = []
    for foreach in (True, False):
        torch.manual_seed(0)
        groups = configure_trainable(build_model(tiny_profile), STAGES["sft"], cfg)
        optimizer = build_optimizer(groups, weight_decay=0.1)
        assert [g["foreach"] for g in optimizer.param_groups] == [True] * len(groups)
        for group in optimizer.param_groups:
            group["foreach"] = foreach
        trained = [p for g in groups for _, p in g.params]
        draws = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in trained:
                p.grad = torch.randn(p.shape, generator=draws) * 1e-2
            optimizer.step()
        weights.append([p.detach().clone() for p in trained])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


class Payload:
    """Unpickling this runs code: it writes `flag`."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return exec, (f"open({str(self.flag)!r}, 'w').write('code ran')",)


def test_incomplete_checkpoint_is_skipped_with_a_warning_naming_it_and_kept(tmp_path, caplog):
    for step in (2, 4, 6):
        (tmp_path / f"step-{step:07d}").mkdir()
    for step in (2, 4):
        (tmp_path / f"step-{step:07d}" / "complete.json").write_text("{}")
    with caplog.at_level("WARNING", logger="hicom.train"):
        done = complete_checkpoints(tmp_path)
    assert [p.name for p in done] == ["step-0000002", "step-0000004"]
    assert "step-0000006" in caplog.text and (tmp_path / "step-0000006").is_dir()


# -- real runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small world, tokenizer, random tiny towers and a params.yaml whose tiny stages use them."""
    root = tmp_path_factory.mktemp("train")
    generate_world(WorldConfig(seed=2, num_videos=16, num_frames=8, size=64), root / "world", progress=False)
    from hicom.data.tokenizer import world_texts
    tok = train_tokenizer(world_texts(root / "world"), 600, root / "tokenizer")
    profile = Params.load().profile("tiny")
    siglip = SiglipModel(SiglipConfig(vision_config=profile.vision.config, text_config=profile.text.config))
    save_model(siglip, root / "towers", tokenizer=tok)
    FramePreprocessor(IMAGE).save_pretrained(root / "towers")
    (root / "data.yaml").write_text("datasets:\n  - {json_path: world/sft.jsonl, sampling_strategy: first:8}\n")
    params = yaml.safe_load(PARAMS_FILE.read_text())
    train = params["profiles"]["tiny"]["train"]
    train["common"].update(micro_batch=1, save_steps=2, save_total_limit=2, log_steps=1)
    for stage in ("align", "cond_pretrain", "sft"):
        train[stage].update(data="data.yaml", global_batch=2, micro_batch=1, epochs=3)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def command(setup, stage, out, *extra, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(29600 + (hash(str(out)) % 300))] if nproc > 1 else [sys.executable]
    return [*launcher, "-m", "hicom", "--params", str(setup / "params.yaml"), "train", "--stage", stage,
            "--out", str(out), "--towers", str(setup / "towers"), "--tokenizer", str(setup / "tokenizer"), *extra]


def run(cmd, env_extra=None, **kw):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_two_process_deepspeed_run_completes_and_logs_from_rank_zero_only(setup, tmp_path, zero):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "stage"
    done = run(command(setup, "cond_pretrain", out, "--set", f"zero_stage={zero}", "--set", "max_steps=3",
                       "--experiment", f"zero{zero}", nproc=2), {"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and len(state["history"]) == 3
    assert (out / "compressor" / "compressor.safetensors").is_file()
    # the global level's spread is measured at the end of the stage, with ZeRO-3's partitioned weights too
    assert state["global_tokens_spread"] > 0 and state["global_tokens_question_spread"] > 0
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name(f"zero{zero}").experiment_id])
    assert len(runs) == 1  # two processes, one run
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [1, 2, 3]
    assert runs[0].data.params["deepspeed.zero_optimization.stage"] == str(zero)
    assert runs[0].data.metrics["global_tokens_spread"] == pytest.approx(state["global_tokens_spread"])


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_two_one_thread_processes_on_two_cores_each_run_on_a_core_of_its_own_and_train_the_same_bytes(setup,
                                                                                                     tmp_path):
    """torchrun leaves its processes to the kernel, which moves them between cores; the CLI binds each to a core of
    its own where they fill the cores (hicom.core.cpus; instruction tuning 301 s instead of 319 on 2 cores). Only where
    a thread runs changes: the stage's folder has the bytes of a run left to the kernel."""
    two = sorted(os.sched_getaffinity(0))[:2]  # the launch is given two cores, as on the 2-core machine
    folders = {}
    for bind in ("1", "0"):
        out = folders[bind] = tmp_path / f"bind{bind}"
        done = run(command(setup, "align", out, "--no-track", "--set", "max_steps=2", nproc=2),
                   {"OMP_NUM_THREADS": "1", "HICOM_BIND_CORES": bind}, preexec_fn=lambda: os.sched_setaffinity(0, two))
        assert done.returncode == 0, done.stderr[-3000:]
        bound = sorted(line.split("hicom: ", 1)[1] for line in done.stderr.splitlines() if "bound to core" in line)
        expected = [f"process {rank} of 2 on this node bound to core(s) {two[rank]} (HICOM_BIND_CORES=0 leaves "
                    f"placement to the kernel)" for rank in (0, 1)] if bind == "1" else []
        assert bound == expected
    assert files_that_differ(folders["1"], folders["0"]) == []


@pytest.mark.slow
def test_killed_stage_resumes_from_its_last_complete_checkpoint_to_the_same_result(setup, tmp_path):
    straight = tmp_path / "straight"
    assert run(command(setup, "align", straight, "--no-track")).returncode == 0
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(command(setup, "align", resumed, "--no-track"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
                            start_new_session=True)
    marker = resumed / "checkpoints" / "step-0000002" / "complete.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (resumed / "trainer_state.json").exists(), "the run was not killed mid-stage"
    again = run(command(setup, "align", resumed, "--no-track"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    a = json.loads((straight / "trainer_state.json").read_text())
    b = json.loads((resumed / "trainer_state.json").read_text())
    assert a["global_step"] == b["global_step"]
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-5)
    from safetensors.torch import load_file
    wa, wb = (load_file(d / "compressor" / "compressor.safetensors") for d in (straight, resumed))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert run(command(setup, "align", resumed, "--no-track")).stdout.count("already complete") == 1


@pytest.mark.slow
def test_a_stage_started_after_a_killed_op_load_clears_its_lock_file_instead_of_hanging(setup, tmp_path):
    """torch's JIT loader holds a lock file in DeepSpeed's shared-memory op folder on every load; a process killed
    then (a lost node, kill -9) left it, and every later stage waited on it forever without a word."""
    import shutil
    from hicom.train.extensions import build_folder
    extensions = tmp_path / "torch_extensions"  # a copy of the op setup.sh built: no rebuild, the cache untouched
    shutil.copytree(build_folder("deepspeed_shm_comm"), extensions / "deepspeed_shm_comm",
                    ignore=shutil.ignore_patterns("lock"))
    lock = extensions / "deepspeed_shm_comm" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom torch.utils.file_baton import FileBaton\n"
                               "assert FileBaton(sys.argv[1]).try_acquire()\nprint('held', flush=True)\ntime.sleep(600)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.kill()  # dies holding torch's baton
    holder.wait()
    assert lock.exists()
    out = tmp_path / "stage"
    done = run(command(setup, "align", out, "--no-track", "--set", "max_steps=1"),
               {"TORCH_EXTENSIONS_DIR": str(extensions)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"removing {lock}: the lock file of DeepSpeed's shared-memory op" in done.stderr
    assert not lock.exists() and json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


@pytest.fixture(scope="module")
def four_steps(setup, tmp_path_factory):
    """A finished 4-step align run that kept its checkpoints (at steps 2 and 4), and its final compressor weights."""
    from safetensors.torch import load_file
    out = tmp_path_factory.mktemp("four") / "stage"
    done = run(command(setup, "align", out, "--no-track", "--set", "max_steps=4", "--set", "keep_checkpoints=true"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == ["step-0000002", "step-0000004"]
    return out, load_file(out / "compressor" / "compressor.safetensors")


def interrupted_copy(four_steps, tmp_path) -> Path:
    """The finished run as a crash after its last save would leave it: checkpoints, no final state."""
    import shutil
    out = tmp_path / "stage"
    shutil.copytree(four_steps[0] / "checkpoints", out / "checkpoints")
    return out


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_is_skipped_and_resume_takes_the_previous_one(setup, four_steps, tmp_path):
    from safetensors.torch import load_file
    out = interrupted_copy(four_steps, tmp_path)
    damaged = out / "checkpoints" / "step-0000004" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    again = run(command(setup, "align", out, "--no-track", "--set", "max_steps=4", "--set", "keep_checkpoints=true"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and "step-0000002 (step 2)" in again.stdout
    assert "not resuming from checkpoint" in again.stderr and "step-0000004" in again.stderr
    assert "truncated" in again.stderr
    weights = load_file(out / "compressor" / "compressor.safetensors")
    assert all(torch.allclose(weights[k], four_steps[1][k], atol=1e-6) for k in weights)
    assert (out / "checkpoints" / "step-0000004" / "complete.json").is_file()  # saved again, whole


@pytest.mark.slow
def test_a_pickle_payload_in_a_checkpoint_is_refused_not_run(setup, four_steps, tmp_path):
    """Even with a forged complete.json that lists the planted file's hash, loading it runs no code."""
    from hicom.core.files import sha256_file
    out = interrupted_copy(four_steps, tmp_path)
    newest = out / "checkpoints" / "step-0000004"
    flag = tmp_path / "code-ran"
    planted = newest / "mp_rank_00_model_states.pt"
    torch.save({"module": Payload(flag)}, planted)
    marker = json.loads((newest / "complete.json").read_text())
    if "files" in marker:  # forge the marker too
        marker["files"]["mp_rank_00_model_states.pt"] = {"size": planted.stat().st_size,
                                                        "sha256": sha256_file(planted)}
        (newest / "complete.json").write_text(json.dumps(marker))
    again = run(command(setup, "align", out, "--no-track", "--set", "max_steps=4"))
    assert not flag.exists(), "loading the checkpoint ran the planted code"
    assert again.returncode == 2 and "refused to load" in again.stderr and str(planted) in again.stderr


@pytest.mark.slow
def test_a_completed_stage_keeps_no_checkpoints_and_a_rerun_training_the_same_weights_writes_the_same_bytes(
        setup, four_steps, tmp_path):
    """The stages after a training stage depend on its folder's bytes (flows/hashes.py, dvc.lock). A rerun that
    trains the same weights must leave them alike: no checkpoints (their client state names the MLflow run), no
    wall times in trainer_state.json. Both runs are tracked, so each has an MLflow run of its own."""
    import shutil
    store = f"sqlite:///{tmp_path}/mlflow.db"
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        done = run(command(setup, "align", out, "--set", "max_steps=2"), {"MLFLOW_TRACKING_URI": store})
        assert done.returncode == 0, done.stderr[-3000:]
    assert not (first / "checkpoints").exists() and (first / "trainer_state.json").is_file()
    assert files_that_differ(first, second) == []
    # As a crash between the final state and the checkpoints' removal leaves it: the rerun finds the stage complete
    # and removes them.
    shutil.copytree(four_steps[0] / "checkpoints", first / "checkpoints")
    again = run(command(setup, "align", first, "--no-track", "--set", "max_steps=2"))
    assert "already complete" in again.stdout and not (first / "checkpoints").exists()
    assert files_that_differ(first, second) == []


def test_two_checkouts_at_different_paths_train_a_stage_into_the_same_bytes(setup, tmp_path):
    """DVC runs a stage at the checkout's root with the paths dvc.yaml gives. The folder recorded the data mixture's
    absolute path in config.json, so two clones (a teammate's, CI's) that trained the same weights hashed apart, and
    neither could reuse the other's outputs (a shared remote, DVC's run cache) for the stages after training. The
    init-from folder is recorded as well."""
    import shutil
    folders = []
    for checkout in (tmp_path / "alice" / "repo", tmp_path / "bob" / "clones" / "repo"):
        shutil.copytree(setup, checkout, ignore=shutil.ignore_patterns("*.db"))
        for stage, previous in (("align", None), ("cond_pretrain", "out/align")):
            cmd = [sys.executable, "-m", "hicom", "--params", "params.yaml", "train", "--stage", stage,
                   "--out", f"out/{stage}", "--towers", "towers", "--tokenizer", "tokenizer", "--no-track",
                   "--set", "max_steps=2", *(["--init-from", previous] if previous else [])]
            done = run(cmd, cwd=checkout)
            assert done.returncode == 0, done.stderr[-3000:]
        recorded = json.loads((checkout / "out" / "cond_pretrain" / "config.json").read_text())
        assert (recorded["train"]["data"], recorded["init_from"]) == ("data.yaml", "out/align")
        folders.append(checkout / "out")
    assert files_that_differ(*folders) == []


def test_a_completed_stage_does_not_save_its_last_step_only_to_delete_it(setup, tmp_path):
    """At paper scale the last step's checkpoint is minutes of optimizer-state I/O, deleted as soon as the final
    state is written. A file where that checkpoint would go makes a save there fail: the stage still completes,
    after saving the periodic checkpoint of step 2."""
    out = tmp_path / "align"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-0000003").write_text("where the last step's checkpoint would go\n")
    done = run(command(setup, "align", out, "--no-track", "--set", "max_steps=3", "--set", "save_steps=2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_next_stage_loads_the_previous_compressor_strictly(setup, tmp_path):
    wrong = tmp_path / "wrong"
    other = HIComCompressor(compressor_from_preset("paper", {"global": {"head_dim": 32, "num_queries": 8},
                                                             "standardize": True}), 64, 64, 64)
    save_compressor(other, wrong / "compressor")
    failed = run(command(setup, "cond_pretrain", tmp_path / "next", "--init-from", str(wrong), "--no-track"))
    assert failed.returncode != 0
    assert "global_compressor.query" in failed.stderr and "mis-shaped" in failed.stderr


def test_train_settings_take_numbers_written_without_a_dot_and_name_bad_values():
    assert Params.load().train("tiny", "sft", overrides={"lr_llm": "1e-3"}).lr_llm == 1e-3
    with pytest.raises(ConfigError, match="train.align.lr_compressor: expected float, got 'fast'"):
        Params.load().train("tiny", "align", overrides={"lr_compressor": "fast"})
    with pytest.raises(ConfigError, match=r"train.align.lr: unknown key"):
        Params.load().train("tiny", "align", overrides={"lr": 1})


@pytest.mark.slow
def test_gradient_checkpointing_switch_trains_the_compressor_through_a_frozen_llm(setup, tmp_path):
    out = tmp_path / "gc"
    done = run(command(setup, "align", out, "--no-track", "--set", "gradient_checkpointing=true",
                       "--set", "max_steps=2"))
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "trainer_state.json").read_text())["history"]
    assert len(history) == 2 and all(h["grad_norm"] > 0 for h in history)


@pytest.mark.slow
def test_first_stage_fits_the_feature_standardisation_on_its_clips_and_the_next_stage_keeps_it(setup, four_steps,
                                                                                              tmp_path):
    """align fits compressor.standardize's statistics on the first visual items of its data (here all 8 clips,
    fewer than STANDARDIZER_ITEMS); cond_pretrain, initialised from it, keeps them instead of refitting."""
    import dataclasses

    from safetensors.torch import load_file

    from hicom.data.video import read_video
    from hicom.train.trainer import STANDARDIZER_ITEMS
    fitted = four_steps[1]
    assert not torch.equal(fitted["standardizer.std"], torch.ones(64))
    profile = Params.load(setup / "params.yaml").profile("tiny")
    towers = str(setup / "towers")
    profile = dataclasses.replace(profile, vision=dataclasses.replace(profile.vision, path=towers),
                                  text=dataclasses.replace(profile.text, path=towers))
    model = build_model(profile).eval()
    rows = [json.loads(line) for line in (setup / "world" / "sft.jsonl").read_text().splitlines()][:8]
    assert len(rows) < STANDARDIZER_ITEMS
    frames = Params.load(setup / "params.yaml").train("tiny", "align", {}).num_frames
    with torch.no_grad():
        features = torch.cat([model.encode_frames(FramePreprocessor(IMAGE)(read_video(setup / "world" / r["video"],
                                                                                       frames).frames),
                                                  with_embeds=False)[0].reshape(-1, 64) for r in rows])
    assert torch.allclose(fitted["standardizer.mean"], features.mean(0), atol=1e-4)
    assert torch.allclose(fitted["standardizer.std"], features.std(0), atol=1e-4)
    nxt = tmp_path / "next"
    done = run(command(setup, "cond_pretrain", nxt, "--init-from", str(four_steps[0]), "--no-track",
                       "--set", "max_steps=1"))
    assert done.returncode == 0, done.stderr[-3000:]
    kept = load_file(nxt / "compressor" / "compressor.safetensors")
    assert all(torch.equal(kept[f"standardizer.{k}"], fitted[f"standardizer.{k}"]) for k in ("mean", "std"))


@pytest.mark.slow
def test_a_stage_given_an_llm_learning_rate_trains_the_llm_and_the_next_stage_starts_from_it(setup, tmp_path):
    """An lr_llm trains the LLM in conditional pre-training, which the paper freezes; instruction tuning,
    initialised from that stage, must start from the LLM it left, not from the base LLM."""
    from safetensors.torch import load_file
    cond, sft = tmp_path / "cond", tmp_path / "sft"
    done = run(command(setup, "cond_pretrain", cond, "--no-track", "--set", "max_steps=2", "--set", "lr_llm=1e-3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert all("lr_llm" in h for h in json.loads((cond / "trainer_state.json").read_text())["history"])
    handed = load_file(cond / "llm" / "model.safetensors")
    # an LLM learning rate so small that instruction tuning's one step leaves the weights it started from
    done = run(command(setup, "sft", sft, "--no-track", "--init-from", str(cond), "--set", "max_steps=1",
                       "--set", "lr_llm=1e-12"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the LLM is the one {cond} trained" in done.stdout
    tuned = {k.removeprefix("language_model."): v for k, v in load_file(sft / "model" / "model.safetensors").items()
             if k.startswith("language_model.")}
    assert set(tuned) == set(handed)
    assert all(torch.allclose(tuned[k], handed[k], atol=1e-6) for k in handed)


def test_without_a_previous_llm_a_stage_keeps_the_profiles_llm(tiny_profile, tmp_path):
    from hicom.train.trainer import LLM_DIR, stage_profile
    assert stage_profile(tiny_profile, None) is tiny_profile
    assert stage_profile(tiny_profile, tmp_path) is tiny_profile  # the previous stage left no LLM
    (tmp_path / LLM_DIR).mkdir()
    assert stage_profile(tiny_profile, tmp_path).llm.path == str(tmp_path / LLM_DIR)
