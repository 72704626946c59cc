"""The project's image recipe: the Dockerfile linted (hadolint) and parsed, and its build steps run as the script
they are, in a copy of exactly what its COPY lines send (no Docker daemon here). The script's venv sees the
project's installed packages through a .pth file, so `pip install -r requirements.lock` must find every pin
already satisfied: a lock that disagrees with the environment it was made from fails here, offline."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def _instructions(parser: DockerfileParser, kind: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == kind]


def test_the_dockerfile_passes_hadolint():
    done = subprocess.run([str(HADOLINT), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_has_the_projects_python_the_lock_and_a_non_root_user(dockerfile):
    image, tag = dockerfile.baseimage.split(":")
    assert image == "python" and tag.startswith("3.11.")  # pyproject: requires-python >=3.11,<3.12
    copied = [shlex.split(value)[:-1] for value in _instructions(dockerfile, "COPY")]
    assert ["requirements.lock", "pyproject.toml"] in copied
    assert all((ROOT / source).exists() for sources in copied for source in sources)
    assert dockerfile.envs["VIRTUAL_ENV"] == "/opt/venv" and dockerfile.envs["PATH"].startswith("/opt/venv/bin:")
    assert _instructions(dockerfile, "USER") == ["1000"]


def test_the_build_steps_run_as_a_script_in_a_copy_of_the_build_context_and_leave_a_pipeline_to_run(dockerfile,
                                                                                                     tmp_path):
    context = tmp_path / "image"
    for value in _instructions(dockerfile, "COPY"):
        *sources, destination = shlex.split(value)
        for source in sources:
            target = context / destination / Path(source).name if destination.endswith("/") else \
                context / (source if destination == "./" else destination)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy2
            copy(ROOT / source, target)
    venv = tmp_path / "venv"  # the project's packages visible to it, as if `dependencies` had downloaded them
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python3*/site-packages")
    (site / "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    steps = [command for value in _instructions(dockerfile, "RUN") for command in value.split("&&")
             if command.strip().startswith("scripts/image_build.sh")]
    assert [s.split()[1] for s in steps] == ["dependencies", "project"]
    for step in steps:
        done = subprocess.run(["bash", "-c", step.strip()], cwd=context, capture_output=True, text=True,
                              timeout=600, env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(venv),
                                                "PIP_NO_INDEX": "1", "HOME": str(tmp_path)})
        assert done.returncode == 0, f"{step}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert list(site.glob("hicom_ops-*.dist-info"))
    # The flow pod runs `retrain` in the image's project folder, which has no git: the flow's own loader must
    # read its DVC pipeline there, and every stage input that no stage makes must be in the image.
    done = subprocess.run([str(venv / "bin" / "python"), "-c", PIPELINE_IN_IMAGE], cwd=context, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) >= 10  # stages loaded


PIPELINE_IN_IMAGE = """
import glob
from pathlib import Path
from flows.stages import load_stages
stages = load_stages(Path("."))
made = [out.rstrip("/") for stage in stages for out in stage.outs]
missing = [(stage.name, dep) for stage in stages for dep in stage.deps
           if not glob.glob(dep) and not any(dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")
                                             for out in made)]
assert not missing, f"stage inputs that are neither in the image nor made by a stage: {missing}"
from dvc.repo import Repo
with Repo(".") as repo:  # the cache where the pods mount the data volume, not in the pod's own disk
    assert Path(repo.cache.local.path).resolve().is_relative_to(Path("outputs").resolve()), repo.cache.local.path
print(len(stages))
"""
