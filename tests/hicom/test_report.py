import math
import subprocess
import sys

import pytest
import yaml

from hicom.core.errors import ConfigError
from hicom.model.settings import Injection
from hicom.params import PARAMS_FILE, Params
from hicom.report import FRAME_COUNTS, build_report, format_report


def test_profiles_resolve_to_typed_configs(tiny_profile, paper_profile):
    assert paper_profile.compressor.local.injection is Injection.DIRECT
    assert paper_profile.compressor.global_.injection is Injection.COARSE
    assert paper_profile.compressor.global_.pos_embed == "split_concat"
    assert paper_profile.llm.path.endswith("models/Qwen2.5-7B-Instruct")
    assert PARAMS_FILE.parent.as_posix() in paper_profile.llm.path  # relative to params.yaml, not the cwd
    assert tiny_profile.vision.path is None


def test_unknown_profile_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"profile: 'paper-70b' is not defined under profiles \(defined: mid, paper-7b, tiny\)"):
        Params.load().profile("paper-70b")


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["compressor"]["global"].update(injection="filmish"), "compressor.global.injection: unknown injection mode 'filmish'"),
    (lambda m: m.update(preset="paperr"), "preset: expected one of paper, release, unconditional, got 'paperr'"),
    (lambda m: m.update(num_frame=8), r"profiles.tiny.model.num_frame: unknown key"),
    (lambda m: m["vision"].update(pth="x"), r"profiles.tiny.model.vision.pth: unknown key"),
    (lambda m: m.update(num_frames=0), "num_frames: must be a positive integer, got 0"),
])
def test_wrong_params_name_the_field(tmp_path, edit, message):
    params = yaml.safe_load(PARAMS_FILE.read_text())
    edit(params["profiles"]["tiny"]["model"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=message):
        Params.load(tmp_path / "params.yaml").profile("tiny")


def test_malformed_params_file_is_named(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("profiles: [unclosed")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        Params.load(bad).profile("tiny")


def test_paper_profile_reproduces_the_papers_token_counts_and_parameter_sizes(paper_profile):
    rep = build_report(paper_profile)
    assert rep.tokens["hicom"] == {1: 113, 32: 680, 64: 1328, 128: 2624}
    assert rep.tokens["llava_ov"][32] == 6272
    p = {k: v / 1e6 for k, v in rep.params.items()}
    assert abs(p["baseline"] - 16.98) < 0.01  # Table A6: 16M
    assert abs(p["vision"] - 428) < 1 and abs(p["vision"] - p["vision_head"] - 413) < 1
    assert abs(p["text"] - 450) < 1
    # the release's direct/direct compressor is 39.31M; the paper preset adds one FiLM injector (7.97M)
    assert abs(p["compressor"] - p["global_injection"] - 39.31) < 0.01
    assert abs(p["global_injection"] - 7.97) < 0.01 and p["local_injection"] == 0
    assert 7600 < p["llm"] < 7630
    text = format_report(rep)
    assert "680" in text and "The paper's 63M" in text and "39.3M" in text


def test_report_command_runs_on_the_meta_device_and_rejects_unknown_profiles():
    ok = subprocess.run([sys.executable, "-m", "hicom", "report", "--profile", "paper-7b"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "HICom (paper)" in ok.stdout and "2624" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "hicom", "report", "--profile", "huge"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'huge' is not defined under profiles" in bad.stderr


@pytest.mark.parametrize("name", ["tiny", "mid", "paper-7b"])
def test_report_counts_each_profiles_visual_tokens_from_its_compressor_grid(name):
    """The efficiency tables compare these counts, so the projectors run on the meta device must produce what each
    profile's patch grid and kernels imply: HICom ceil(t / kt) * ceil(g / ks)^2 local tokens (kt = 1 for one frame)
    plus the global queries, the baseline t * ceil(g / pool)^2. The tiny profile pools each whole 9x9 frame into
    one local token (README, "Where the answer is lost"), so its ratio at 32 frames is 800 / 48, not the paper's
    6272 / 680."""
    profile = Params.load().profile(name)
    g = profile.vision.config["image_size"] // profile.vision.config["patch_size"]
    local, pool = profile.compressor.local, profile.compressor.baseline_pool
    tokens = build_report(profile).tokens
    for t in FRAME_COUNTS:
        kt = 1 if t == 1 else local.temporal_kernel
        expected = math.ceil(t / kt) * math.ceil(g / local.spatial_kernel) ** 2 + profile.compressor.global_.num_queries
        assert tokens["hicom"][t] == expected, (name, t)
        if t > 1:
            assert tokens["llava_ov"][t] == t * math.ceil(g / pool) ** 2, (name, t)
    if name == "tiny":
        assert (tokens["llava_ov"][32], tokens["hicom"][32]) == (800, 48)
