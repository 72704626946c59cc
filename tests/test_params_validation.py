"""params.yaml is checked whole before any command works: unknown keys, wrong types and missing profiles
fail at once with a message naming the key."""
import copy
import dataclasses

import pytest
import yaml

from hicom.cli import main
from hicom.config import PARAMS_FILE, PARAMS_SCHEMA, load_params, validate_params
from hicom.core.errors import ConfigError


@pytest.fixture
def params():
    return copy.deepcopy(load_params())


def test_the_project_params_file_is_valid(params):
    validate_params(params, PARAMS_FILE)


@pytest.mark.parametrize("path,value,message", [
    (("pipeline", "retries"), "x", "params.yaml: pipeline.retries: expected int, got 'x'"),
    (("pipeline", "resources", "train", "nodes"), "two",
     "params.yaml: pipeline.resources.train.nodes: expected int, got 'two'"),
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
    (lambda p: p["registry"]["gate"].update(accuracy_drop=0.1),
     "params.yaml: registry.gate.accuracy_drop: unknown key (known: accuracy_max_drop,"),
    (lambda p: p["data"]["synthetic"].update(videos=3), "params.yaml: data.synthetic.videos: unknown key"),
    (lambda p: p["profiles"]["tiny"]["train"].update(finetune={}), "params.yaml: profiles.tiny.train.finetune: unknown"),
    (lambda p: p["profiles"]["tiny"].pop("model"), "params.yaml: profiles.tiny.model: missing"),
])
def test_an_unknown_or_missing_key_is_named(params, mutate, message):
    mutate(params)
    with pytest.raises(ConfigError) as err:
        validate_params(params)
    assert str(err.value).startswith(message)


def test_a_missing_profile_is_named_whether_default_or_asked_for(params):
    defined = ", ".join(sorted(params["profiles"]))
    with pytest.raises(ConfigError) as err:
        validate_params(params, profile="paper-70b")
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
    good.write_text(yaml.safe_dump(load_params()))
    assert main(["--params", str(good), "smoke", "--profile", "tiny-typo"]) == 2
    assert "--profile: 'tiny-typo' is not defined under profiles" in capsys.readouterr().err


def test_the_schema_lists_exactly_the_fields_of_each_settings_class():
    """The schema repeats the settings dataclasses' fields (config.py cannot import them: they pull in torch);
    this keeps the two from drifting apart."""
    from hicom.curate import CurateConfig, OpenAIConfig
    from hicom.data.synthetic import WorldConfig
    from hicom.evaluate.mcq import EvalConfig
    from hicom.pretrain.llm import LLMTrainConfig
    from hicom.pretrain.towers import TowerTrainConfig
    from hicom.efficiency.settings import ClipSettings, EfficiencySettings
    from hicom.registry import GateConfig, RegistryConfig
    from hicom.train.config import TrainConfig

    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    def keys(spec):
        return set(getattr(spec, "fields", spec))

    schema = PARAMS_SCHEMA
    assert keys(schema["profiles"].spec.spec["train"]["sft"]) == fields(TrainConfig)
    assert keys(schema["towers"]) == fields(TowerTrainConfig)
    assert keys(schema["llm"]) == fields(LLMTrainConfig)
    assert keys(schema["data"]["synthetic"]) == fields(WorldConfig)
    assert keys(schema["curate"]) == fields(CurateConfig) and keys(schema["curate"]["openai"]) == fields(OpenAIConfig)
    assert keys(schema["evaluate"]) == fields(EvalConfig)
    assert keys(schema["efficiency"]) == fields(EfficiencySettings)
    assert keys(schema["efficiency"].fields["clips"]) == fields(ClipSettings)
    assert keys(schema["registry"]) == fields(RegistryConfig) and keys(schema["registry"]["gate"]) == fields(GateConfig)
