"""params.yaml is read once and checked whole before any command works: unknown keys, wrong types and missing
profiles fail at once with a message naming the key; each section's checks come from its dataclass."""
import copy
import dataclasses

import pytest
import yaml

from hicom.cli import main
from hicom.core.errors import ConfigError
from hicom.params import PARAMS_FILE, SECTIONS, Params


@pytest.fixture
def params():
    return copy.deepcopy(Params.load().raw)


def validate_params(raw: dict) -> Params:
    return Params(raw)


def test_the_project_params_file_is_valid(params):
    Params(params, PARAMS_FILE)


@pytest.mark.parametrize("path,value,message", [
    (("towers", "steps"), "x", "params.yaml: towers.steps: expected int, got 'x'"),
    (("towers", "seed"), True, "params.yaml: towers.seed: expected int, got True"),
    (("llm", "lr"), "fast", "params.yaml: llm.lr: expected float, got 'fast'"),
    (("data", "decoder"), "ffmpeg", "params.yaml: data.decoder: expected one of decord, pyav, got 'ffmpeg'"),
    (("curate", "categories"), "a circle", "params.yaml: curate.categories: expected a list, got 'a circle'"),
    (("efficiency", "frames"), [32, "64"], "params.yaml: efficiency.frames[1]: expected int, got '64'"),
    (("evaluate", "max_new_tokens"), 1.5, "params.yaml: evaluate.max_new_tokens: expected int, got 1.5"),
    (("registry", "gate", "latency_max_increase"), "10%",
     "params.yaml: registry.gate.latency_max_increase: expected float, got '10%'"),
    (("profiles", "tiny", "train", "sft", "epochs"), "4",
     "params.yaml: profiles.tiny.train.sft.epochs: expected int, got '4'"),
    (("profiles", "tiny", "train", "common", "bf16"), "yes",
     "params.yaml: profiles.tiny.train.common.bf16: expected one of auto, true, false, got 'yes'"),
    (("profiles", "tiny", "model", "compressor", "local", "injection"), "sideways",
     "params.yaml: profiles.tiny.model.compressor.local.injection: unknown injection mode 'sideways'"),
])
def test_a_wrong_type_is_named_by_its_key(params, path, value, message):
    *parents, key = path
    section = params
    for name in parents:
        section = section.setdefault(name, {})
    section[key] = value
    with pytest.raises(ConfigError) as err:
        validate_params(params)
    assert str(err.value).startswith(message)


def test_yaml_floats_without_a_dot_pass_as_floats(params):
    params["profiles"]["tiny"]["train"]["align"]["lr_compressor"] = "1e-3"  # YAML 1.1 reads this as a string
    validate_params(params)


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.update(tower={}), "params.yaml: tower: unknown top-level key (known: profile, profiles,"),
    (lambda p: p["registry"].update(owner="me"), "params.yaml: registry.owner: unknown key (known: model_name,"),
    (lambda p: p["registry"]["gate"].update(accuracy_max_drop=0.01),  # the one-point rule the margin replaced
     "params.yaml: registry.gate.accuracy_max_drop: unknown key (known: accuracy_margin, min_questions,"),
    (lambda p: p["data"]["synthetic"].update(videos=3), "params.yaml: data.synthetic.videos: unknown key"),
    (lambda p: p["profiles"]["tiny"]["train"].update(finetune={}), "params.yaml: profiles.tiny.train.finetune: unknown"),
    (lambda p: p["profiles"]["tiny"].pop("model"), "params.yaml: profiles.tiny.model: missing"),
    (lambda p: p["profiles"]["tiny"]["model"]["vision"].update(pth="x"),
     "params.yaml: profiles.tiny.model.vision.pth: unknown key (known: config, path)"),
    (lambda p: p["profiles"]["tiny"]["model"].update(num_frames=0),
     "params.yaml: profiles.tiny.model.num_frames: must be a positive integer, got 0"),
])
def test_an_unknown_or_missing_key_is_named(params, mutate, message):
    mutate(params)
    with pytest.raises(ConfigError) as err:
        validate_params(params)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("key,value,message", [
    ("accuracy_margin", 0, "params.yaml: registry.gate.accuracy_margin: must be above 0 and below 1"),
    ("accuracy_margin", -0.01, "params.yaml: registry.gate.accuracy_margin: must be above 0 and below 1"),
    ("accuracy_margin", 1.5, "params.yaml: registry.gate.accuracy_margin: must be above 0 and below 1"),
    ("min_questions", 0, "params.yaml: registry.gate.min_questions: must be at least 1, got 0"),
])
def test_a_gate_that_cannot_decide_is_refused_naming_the_key(params, key, value, message):
    params["registry"]["gate"][key] = value
    with pytest.raises(ConfigError) as err:
        validate_params(params)
    assert str(err.value).startswith(message)


def test_a_missing_profile_is_named_whether_default_or_asked_for(params, tmp_path):
    defined = ", ".join(sorted(params["profiles"]))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        Params.load(path, profile="paper-70b")
    assert str(err.value) == f"params.yaml: --profile: 'paper-70b' is not defined under profiles (defined: {defined})"
    params["profile"] = "huge"
    with pytest.raises(ConfigError, match=r"^params.yaml: profile: 'huge' is not defined under profiles"):
        validate_params(params)
    del params["profile"]
    with pytest.raises(ConfigError, match=r"^params.yaml: profile: missing"):
        validate_params(params)


def test_every_command_fails_on_bad_params_before_starting_work(params, tmp_path, capsys):
    params["pipeline"] = {"retries": 2}
    params["curate"]["top_per_category"] = "many"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    rc = main(["--params", str(bad), "synth", "--out", str(tmp_path / "world")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "error: params.yaml: curate.top_per_category: expected int, got 'many'"
    assert not (tmp_path / "world").exists()
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(Params.load().raw))
    assert main(["--params", str(good), "smoke", "--profile", "tiny-typo"]) == 2
    assert "--profile: 'tiny-typo' is not defined under profiles" in capsys.readouterr().err


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_section_rejects_an_unknown_key_and_a_wrong_type_naming_the_key(params, section):
    """The checks come from the section's dataclass: its fields are the keys, their annotations the types."""
    cls = SECTIONS[section]
    field = next(f for f in dataclasses.fields(cls) if f.type in ("int", "float", "str"))
    params[section] = {**(params.get(section) or {}), "no_such_key": 1}
    with pytest.raises(ConfigError, match=rf"^params.yaml: {section}.no_such_key: unknown key \(known: "):
        validate_params(params)
    del params[section]["no_such_key"]
    params[section][field.name] = [1]
    with pytest.raises(ConfigError, match=rf"^params.yaml: {section}.{field.name}: expected {field.type}, got \[1\]"):
        validate_params(params)


def test_sections_are_the_dataclasses_the_code_reads(params):
    from hicom.evaluate.settings import EvalConfig

    loaded = validate_params(params)
    assert isinstance(loaded.evaluate, EvalConfig) and loaded.evaluate.max_new_tokens == params["evaluate"]["max_new_tokens"]
    assert loaded.data.synthetic.num_videos == params["data"]["synthetic"]["num_videos"]
    assert loaded.curate.categories == tuple(params["curate"]["categories"])
    assert loaded.train("tiny", "sft").epochs == params["profiles"]["tiny"]["train"]["sft"]["epochs"]
    assert loaded.pipeline == params["pipeline"]  # flows' section, checked by flows


@pytest.mark.parametrize("path,value,message", [
    (("retries",), "x", "params.yaml: pipeline.retries: expected int, got 'x'"),
    (("resources", "train", "nodes"), "two", "params.yaml: pipeline.resources.train.nodes: expected int, got 'two'"),
])
def test_the_pipeline_section_is_checked_by_flows(params, path, value, message):
    from flows.settings import PipelineSettings

    *parents, key = path
    section = params["pipeline"]
    for name in parents:
        section = section[name]
    section[key] = value
    loaded = validate_params(params)  # hicom keeps `pipeline:` as given
    with pytest.raises(ConfigError) as err:
        PipelineSettings.from_params(loaded.raw)
    assert str(err.value).startswith(message)


def test_one_command_reads_params_yaml_once(tmp_path, monkeypatch):
    """`hicom train` parses the file once; the profile reaches the trainer without another read."""
    import pathlib

    import hicom.train.trainer as trainer

    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_FILE.read_text().replace("configs/data/", str(PARAMS_FILE.parent / "configs/data") + "/"))
    reads = []
    real_read_text = pathlib.Path.read_text

    def counting_read_text(self, *args, **kwargs):
        if self.name == "params.yaml":
            reads.append(self)
        return real_read_text(self, *args, **kwargs)

    runs = []
    monkeypatch.setattr(pathlib.Path, "read_text", counting_read_text)
    monkeypatch.setattr(trainer, "train_stage", runs.append)
    assert main(["--params", str(path), "train", "--stage", "sft", "--profile", "tiny", "--out", str(tmp_path / "o"),
                 "--tokenizer", str(tmp_path), "--no-track"]) == 0
    assert reads == [path]
    sft_epochs = yaml.safe_load(PARAMS_FILE.read_text())["profiles"]["tiny"]["train"]["sft"]["epochs"]
    assert runs[0].profile.name == "tiny" and runs[0].cfg.epochs == sft_epochs and runs[0].decoder == "decord"


@pytest.mark.parametrize("path,value,message", [
    (("curate", "frames"), 0, "curate.frames: must be >= 1, got 0"),
    (("curate", "openai", "concurrency"), 0, "curate.openai.concurrency: must be >= 1, got 0"),
    (("profiles", "tiny", "train", "common", "max_steps"), 0, "train.max_steps: must be >= 1, got 0"),
    (("profiles", "tiny", "train", "align", "max_steps"), -2, "train.max_steps: must be >= 1, got -2"),
    (("profiles", "tiny", "train", "sft", "lr_llm"), 0, "train.lr_llm: must be > 0, got 0.0"),
    (("profiles", "tiny", "train", "common", "warmup_ratio"), 1.5, "train.warmup_ratio: must be within [0, 1], got 1.5"),
    (("towers", "batch_size"), 0, "towers.batch_size: must be >= 1, got 0"),
    (("towers", "object_loss"), -1.0, "towers.object_loss: must be >= 0, got -1.0"),
    (("llm", "lr"), -1.0, "llm.lr: must be > 0, got -1.0"),
    (("data", "read_timeout_s"), 0, "data.read_timeout_s: must be > 0, got 0"),
    (("data", "limits", "max_frame_pixels"), 0, "data.limits.max_frame_pixels: must be > 0, got 0"),
])
def test_a_bad_number_is_named_by_its_key_and_value_before_any_work(params, path, value, message):
    *parents, key = path
    section = params
    for name in parents:
        section = section.setdefault(name, {})
    section[key] = value
    with pytest.raises(ConfigError, match=rf"{message.replace('[', '.').replace(']', '.')}$"):
        loaded = validate_params(params)
        loaded.train("tiny", parents[-1] if parents[-1] in ("align", "cond_pretrain", "sft") else "align")


@pytest.mark.parametrize("stage,lr_llm,trains", [("align", None, False), ("align", 1e-3, True),
                                                 ("cond_pretrain", 1e-3, True), ("sft", 3e-3, True)])
def test_an_llm_learning_rate_trains_the_llm_in_any_stage_and_without_one_only_sft_does(stage, lr_llm, trains):
    from hicom.model.build import build_model
    from hicom.train.config import STAGES
    from hicom.train.optim import configure_trainable
    cfg = Params.load().train("tiny", stage, {"lr_llm": lr_llm})
    model = build_model(Params.load().profile("tiny"), device="meta")
    groups = {g.name: g.lr for g in configure_trainable(model, STAGES[stage], cfg)}
    assert ("llm" in groups) == trains and groups.get("llm") == lr_llm
    assert any(p.requires_grad for p in model.language_model.parameters()) == trains


def test_command_line_numbers_fail_before_work_naming_the_option_or_key(tmp_path, capsys):
    out = tmp_path / "stage"
    assert main(["train", "--stage", "align", "--out", str(out), "--set", "max_steps=0"]) == 2
    assert capsys.readouterr().err.strip() == "error: train.max_steps: must be >= 1, got 0"
    assert main(["train", "--stage", "align", "--out", str(out), "--set", "max_steps=-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: train.max_steps: must be >= 1, got -1"
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--benchmark", "synthetic", "--frames", "0", "--out", str(out)])
    assert exit_.value.code == 2
    assert "argument --frames: must be >= 1, got 0" in capsys.readouterr().err


def test_unnamed_texts_without_the_object_loss_is_refused_naming_both_keys(params):
    params["towers"].update(unnamed_texts=True, object_loss=0)  # the texts are matched inside the object loss
    with pytest.raises(ConfigError, match=r"towers\.unnamed_texts: true needs towers\.object_loss > 0"):
        validate_params(params)
