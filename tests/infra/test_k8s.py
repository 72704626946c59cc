"""Kubernetes: manifests checked offline against the Kubernetes schemas (kubernetes-validate), and the executor
run against API stand-ins that take and return the client's own model objects (no cluster can run here)."""
from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import (V1ContainerState, V1ContainerStateTerminated, V1ContainerStatus, V1Job,
                               V1JobCondition, V1JobSpec, V1JobStatus, V1ObjectMeta, V1Pod, V1PodCondition,
                               V1PodList, V1PodStatus, V1PodTemplateSpec)
from kubernetes.client.exceptions import ApiException
from prefect.utilities.templating import apply_values

from flows.executors.base import JobState, StageJob, run_job
from flows.executors.k8s import KubernetesExecutor, KubernetesSettings, job_name, job_state

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSION = "1.33.0"


def _validate(manifest: dict, strict: bool = True) -> None:
    """Raise kubernetes_validate.ValidationError if `manifest` breaks the schema of its kind (strict: no
    unknown fields either)."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=strict)


# ---- manifests ----

STACK_MANIFESTS = sorted((K8S / "stack").glob("*.yaml"))
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"  # created by hand, never applied with the folder


def _secrets() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(SECRETS_EXAMPLE.read_text())}


def test_the_stack_manifests_hold_mlflow_the_prefect_worker_and_the_settings_but_no_secret():
    """No Secret in the folder: `kubectl apply -f infra/k8s/stack/` would put the placeholders back over the real
    Secrets each time it is run."""
    documents = [d for path in STACK_MANIFESTS for d in yaml.safe_load_all(path.read_text())]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("Deployment", "prefect-worker"),
            ("Role", "prefect-worker"), ("ConfigMap", "hicom-stack")} <= kinds
    assert not [name for kind, name in kinds if kind == "Secret"]


def test_every_secret_and_key_a_stack_pod_reads_is_in_the_secrets_example():
    """The Secrets the pods name (envFrom, env from a key, a mounted file) and their keys, against the example a
    team creates its real ones from."""
    documents = [d for path in STACK_MANIFESTS for d in yaml.safe_load_all(path.read_text())]
    named: dict[str, set[str]] = {}
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    named.setdefault(source["secretRef"]["name"], set())
            for variable in container.get("env", []):
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    ref = variable["valueFrom"]["secretKeyRef"]
                    named.setdefault(ref["name"], set()).add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                named.setdefault(volume["secret"]["secretName"], set()).update(
                    item["key"] for item in volume["secret"].get("items", []))
    secrets = _secrets()
    assert set(named) == set(secrets) == {"hicom-s3-credentials", "hicom-seaweedfs"}
    for name, keys in named.items():
        assert keys <= set(secrets[name]["stringData"]), name


def test_kubectl_apply_of_the_stack_folder_makes_the_namespace_before_anything_in_it():
    """`kubectl apply -f infra/k8s/stack/` takes the files in name order and fails an object whose namespace does
    not exist yet: the Namespace must be alone in the first file, and every other object in it."""
    [first, *rest] = [list(yaml.safe_load_all(path.read_text())) for path in sorted(STACK_MANIFESTS)]
    [namespace] = first
    assert namespace["kind"] == "Namespace"
    for document in (d for documents in rest for d in documents):
        assert document["kind"] != "Namespace"
        assert document["metadata"]["namespace"] == namespace["metadata"]["name"], document["metadata"]["name"]


def test_every_service_the_stack_config_points_at_is_defined_with_that_port_and_a_backing_deployment():
    """The ConfigMap's URLs (MLflow, the Prefect API, S3) name Services of the manifests, on the port they use,
    each selecting the pods of a Deployment that listens there."""
    from urllib.parse import urlsplit
    documents = [d for path in STACK_MANIFESTS for d in yaml.safe_load_all(path.read_text())]
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    config = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hicom-stack")
    for key, value in config["data"].items():
        if not str(value).startswith("http"):
            continue
        url = urlsplit(value)
        name, namespace = url.hostname.split(".")[:2]
        assert name in services and namespace == services[name]["metadata"]["namespace"], f"{key}: no Service {name}"
        [port] = [p for p in services[name]["spec"]["ports"] if p["port"] == url.port]
        selector = services[name]["spec"]["selector"]
        backing = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert backing, f"{key}: Service {name} selects no Deployment's pods"
        container_ports = {p["name"] for d in backing for c in d["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])}
        assert port["targetPort"] in container_ports, f"{key}: {name} targets {port['targetPort']}"


def test_the_cluster_gives_its_pods_every_setting_the_local_stacks_env_file_gives_its_clients(tmp_path):
    """The ConfigMap and the S3 Secret (envFrom of the flow's and the stages' pods) set every variable of `make
    stack-up`'s env file but its folder; the ones that say how, not where, with the same values (without
    HICOM_PREFECT_RESULTS a flow pod kept its results on its own disk, and every run computed every stage again)."""
    from infra.stack.stack import StackConfig, client_env
    local = client_env(StackConfig(tmp_path / "stack"))
    documents = [d for path in STACK_MANIFESTS for d in yaml.safe_load_all(path.read_text())]
    config = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hicom-stack")
    cluster = {**config["data"], **_secrets()["hicom-s3-credentials"]["stringData"]}
    assert set(local) - set(cluster) == {"STACK_DIR"}
    where = {"MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "STACK_DIR"}
    assert {k: cluster[k] for k in set(local) - where} == {k: local[k] for k in set(local) - where}


def test_the_kubernetes_worker_package_is_pinned_and_provides_the_pools_worker_type():
    from importlib import metadata

    from prefect_kubernetes.worker import KubernetesWorker

    from flows.cli import WORK_POOLS
    assert KubernetesWorker.type == WORK_POOLS["hicom-kubernetes"]
    pin = f"prefect-kubernetes=={metadata.version('prefect-kubernetes')}"
    assert f'"{pin}"' in (ROOT / "pyproject.toml").read_text()
    assert pin in (ROOT / "requirements.lock").read_text().splitlines()


@pytest.mark.parametrize("path", [*STACK_MANIFESTS, SECRETS_EXAMPLE], ids=lambda p: p.name)
def test_stack_manifest_validates_against_the_kubernetes_schema(path):
    for document in yaml.safe_load_all(path.read_text()):
        _validate(document)


def _container_command(manifest: str, deployment: str) -> list[str]:
    documents = yaml.safe_load_all((K8S / "stack" / manifest).read_text())
    found = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment)
    [container] = found["spec"]["template"]["spec"]["containers"]
    return container["command"]


def test_the_clusters_seaweedfs_reads_every_flag_with_the_local_stacks_buckets_and_volume_size():
    """The cluster's S3 runs `weed mini` as `make stack-up` does: the same buckets, and volumes of the local
    stack's size, not mini's 1 GiB on its claim, which leave a bucket without a volume on a nearly full claim.
    Every argument must be a flag: weed stops reading flags at the first one that is not (an unquoted
    `-bucket=a,b,c` in a YAML list is three items), and the rest is silently ignored."""
    from infra.stack.stack import BUCKETS, VOLUME_SIZE_MB
    weed, subcommand, *args = _container_command("seaweedfs.yaml", "seaweedfs")
    assert (weed, subcommand) == ("weed", "mini")
    not_flags = [arg for arg in args if not arg.startswith("-") or "=" not in arg]
    assert not not_flags, f"weed mini would stop reading flags at {not_flags[0]!r}: {args}"
    flags = dict(arg.lstrip("-").split("=", 1) for arg in args)
    assert flags["bucket"].split(",") == list(BUCKETS)
    assert flags["master.volumeSizeLimitMB"] == str(VOLUME_SIZE_MB)
    assert flags["webdav"] == flags["admin.ui"] == "false"


def test_the_clusters_mlflow_answers_its_service_names_and_a_port_forward_but_no_other_host(monkeypatch):
    """MLflow's own host check (its server's security middleware, fed the manifest's --allowed-hosts as its CLI
    feeds it) on a request per Host header: the ConfigMap's tracking URI, `kubectl port-forward` (localhost,
    127.0.0.1), and a foreign name, which MLflow must still refuse."""
    from urllib.parse import urlsplit

    from flask import Flask
    from mlflow.server.security import init_security_middleware
    command = _container_command("mlflow.yaml", "mlflow")
    allowed = command[command.index("--allowed-hosts") + 1]
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", allowed)
    app = Flask("mlflow-host-check")
    app.add_url_rule("/api/2.0/mlflow/experiments/search", "search", lambda: "ok")
    init_security_middleware(app)
    config = next(d for d in yaml.safe_load_all((K8S / "stack" / "stack-config.yaml").read_text()))
    client = app.test_client()

    def status(host: str) -> int:
        return client.get("/api/2.0/mlflow/experiments/search", headers={"Host": host}).status_code

    assert status(urlsplit(config["data"]["MLFLOW_TRACKING_URI"]).netloc) == 200
    for name in ("mlflow", "mlflow.hicom", "mlflow.hicom.svc", "mlflow.hicom.svc.cluster.local"):  # the Service's
        assert status(f"{name}:5000") == 200, name
    assert status("localhost:5000") == status("127.0.0.1:5000") == 200
    assert status("rebound.example:5000") == 403


def test_the_prefect_worker_watches_only_the_namespace_its_role_covers_where_its_flow_runs_go(monkeypatch):
    """prefect-kubernetes' own settings, read from the worker's env: its observer watches the Role's namespace, not
    the whole cluster (a namespaced Role is refused a cluster-wide watch), the one the pool's template defaults to."""
    from prefect_kubernetes.settings import KubernetesSettings
    documents = list(yaml.safe_load_all((K8S / "stack" / "prefect-worker.yaml").read_text()))
    [role] = [d for d in documents if d["kind"] == "Role"]
    [container] = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    namespace = role["metadata"]["namespace"]
    assert KubernetesSettings().observer.namespaces == {namespace}
    assert template["variables"]["properties"]["namespace"]["default"] == namespace


def test_the_committed_secrets_hold_placeholders_only():
    assert {value for secret in _secrets().values() for value in secret["stringData"].values()} == {"set-me"}


def test_schema_validation_catches_a_broken_manifest():
    service, job = KubernetesExecutor(batch_api=object(), core_api=object()).render(
        StageJob("align", ["train"], Path("x.log")), "hicom-align-abc123")
    job["spec"]["completions"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job)


def _flow_run_job() -> dict:
    """The flow run's Job as the work pool's base job template makes it, through Prefect's own templating."""
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values = {**defaults, "name": "retrain-nightly", "env": {"PREFECT_API_URL": "http://prefect:4200/api"},
              "labels": {"prefect.io/flow-run-id": "1234"}, "command": "prefect flow-run execute"}
    return apply_values(template["job_configuration"], values)["job_manifest"]


def test_prefect_base_job_template_renders_a_valid_job_through_prefects_templating():
    manifest = _flow_run_job()
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    # the worker turns the env mapping into a list and the command string into args, as here
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    container["args"] = container["args"].split()
    # Not strict: the Prefect worker insists on parallelism/completions inside the pod spec (its own default
    # template's quirk); the API server drops those unknown fields with a warning.
    _validate(manifest, strict=False)
    pod_spec = manifest["spec"]["template"]["spec"]
    _validate({**manifest, "spec": {**manifest["spec"], "template": {"spec": {
        k: v for k, v in pod_spec.items() if k not in ("parallelism", "completions")}}}})
    assert container["envFrom"] == [{"secretRef": {"name": "hicom-s3-credentials"}},
                                    {"configMapRef": {"name": "hicom-stack"}}]
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == "prefect-worker"


def test_the_flow_pod_and_the_stage_pods_run_as_the_images_user_and_can_write_the_data_volume():
    """Both mount the data volume (outputs/) and run as the image's user: fsGroup makes a fresh volume writable by
    it, without walking a large volume's files again at each start (OnRootMismatch)."""
    import re
    user = int(re.search(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1))
    _, stage_job = KubernetesExecutor(batch_api=object(), core_api=object()).render(
        StageJob("align", ["train"], Path("x.log")), "hicom-align-abc123")
    for job in (_flow_run_job(), stage_job):
        pod = job["spec"]["template"]["spec"]
        assert [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "hicom-data"]
        context = pod["securityContext"]
        assert (context["runAsNonRoot"], context["runAsUser"], context["fsGroup"]) == (True, user, user)
        assert context["fsGroupChangePolicy"] == "OnRootMismatch"


# ---- the stage Job ----

def test_a_multi_node_stage_becomes_an_indexed_job_with_torchrun_meeting_on_pod_0():
    settings = KubernetesSettings(namespace="ml", image="registry.example/hicom:1.0")
    job = StageJob("sft", ["train", "--stage", "sft", "--out", "outputs/sft"], Path("sft.log"), nodes=4,
                   nproc_per_node=8, gpus_per_node=8, env={"HICOM_RUN": "nightly"}, time_limit_s=7200)
    executor = KubernetesExecutor(settings, batch_api=object(), core_api=object())
    service, manifest = executor.render(job, "hicom-sft-abc123")
    _validate(service)
    _validate(manifest)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {"hicom/job": "hicom-sft-abc123"}
    spec = manifest["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["activeDeadlineSeconds"] == 7200 and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "hicom-sft-abc123" and pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["command"] == [
        "python", "-m", "torch.distributed.run", "--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d",
        "--rdzv_endpoint=hicom-sft-abc123-0.hicom-sft-abc123:29500", "--rdzv_id=hicom-sft-abc123",
        "--max_restarts=3", "-m", "hicom", "train", "--stage", "sft", "--out", "outputs/sft"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {"name": "HICOM_RUN", "value": "nightly"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "hicom-s3-credentials"}},
                                    {"configMapRef": {"name": "hicom-stack"}}]


def test_a_single_process_stage_runs_the_plain_command_and_fails_the_job_on_disruption_without_requeue():
    settings = KubernetesSettings(requeue=False, volume_claim=None, secrets=(), config_maps=())
    _, manifest = KubernetesExecutor(settings, batch_api=object(), core_api=object()).render(
        StageJob("smoke", ["smoke", "--profile", "tiny"], Path("s.log")), "hicom-smoke-abc123")
    _validate(manifest)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "hicom", "smoke", "--profile", "tiny"]
    assert "envFrom" not in container and "activeDeadlineSeconds" not in manifest["spec"]
    rules = manifest["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


@pytest.mark.parametrize("cpu,processes,env,threads", [
    ("8", 2, {}, "4"),  # the pod's CPU request shared by its processes, not the node's cores torch would see
    ("2", 1, {}, "2"),
    ("500m", 1, {}, "1"),  # at least one
    ("3", 2, {}, "1"),
    ("8", 2, {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}, "3"),  # threads_per_process, as the flow passes it
])
def test_a_pods_processes_share_its_cpu_request_as_torch_threads(cpu, processes, env, threads):
    _, manifest = KubernetesExecutor(KubernetesSettings(cpu=cpu), batch_api=object(), core_api=object()).render(
        StageJob("align", ["train"], Path("a.log"), nproc_per_node=processes, env=env), "hicom-align-abc123")
    variables = {e["name"]: e["value"] for e in _pod_spec(manifest)["containers"][0]["env"]}
    assert (variables["OMP_NUM_THREADS"], variables["MKL_NUM_THREADS"]) == (threads, threads)


def _pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def test_each_stage_gets_the_image_and_resources_params_yaml_gives_its_command(monkeypatch):
    """pipeline.clusters.kubernetes in params.yaml, read through the factory's settings: CPU, memory and node
    selector per hicom command (GPUs from pipeline.resources through the StageJob), the image from $HICOM_IMAGE
    unless params names one; a command without an entry gets the modest defaults, not a training node's."""
    from flows.executors import executor_kind
    from flows.settings import PipelineSettings
    monkeypatch.setenv("HICOM_IMAGE", "registry.example/hicom-ops:abc123")
    params = yaml.safe_load("""
pipeline:
  clusters:
    kubernetes:
      per_command:
        train: {cpu: "16", memory: 128Gi, node_selector: {gpu: h100}}
        evaluate: {cpu: "4", memory: 32Gi, image: registry.example/hicom-eval:1}
""")
    options = PipelineSettings.from_params(params).clusters["kubernetes"]
    settings = executor_kind("kubernetes").settings("kubernetes", options)
    executor = KubernetesExecutor(settings, batch_api=object(), core_api=object())
    jobs = {"train": StageJob("train_sft", ["train", "--stage", "sft"], Path("t.log"), gpus_per_node=8),
            "evaluate": StageJob("evaluate@synthetic", ["evaluate"], Path("e.log")),
            "curate": StageJob("curate", ["curate"], Path("c.log"))}
    pods = {command: _pod_spec(executor.render(job, f"hicom-{command}-abc123")[1]) for command, job in jobs.items()}
    containers = {command: pod["containers"][0] for command, pod in pods.items()}
    assert containers["train"]["resources"]["requests"] == {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}
    assert pods["train"]["nodeSelector"] == {"gpu": "h100"}
    assert containers["train"]["image"] == "registry.example/hicom-ops:abc123"
    assert containers["evaluate"]["image"] == "registry.example/hicom-eval:1"
    assert containers["evaluate"]["resources"]["requests"] == {"cpu": "4", "memory": "32Gi"}
    assert containers["curate"]["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert "nodeSelector" not in pods["curate"]
    for command, job in jobs.items():
        _validate(executor.render(job, f"hicom-{command}-abc123")[1])


def test_an_ablation_variants_stage_pods_find_the_params_file_and_data_mixtures_the_flow_pod_wrote():
    """The flow pod writes a variant's params file and its copies of data mixtures before the stages run; a stage
    pod shares only the data volume (outputs/) with it, so each must lie there (an ablation run on the cluster
    failed at its first stage when the params file lay in the flow pod's project folder)."""
    import posixpath

    from flows.executors import executor_kind
    from flows.retrain import plan_run
    plan = plan_run(ROOT, ["no_injection"], {"data.synthetic.qa_per_video": 48}, "kubernetes")
    settings = executor_kind("kubernetes").settings("kubernetes", plan.settings.clusters.get("kubernetes"))
    executor = KubernetesExecutor(settings, batch_api=object(), core_api=object())
    variant_stages = [stage for stage in plan.stages if stage.params_file]
    assert variant_stages and plan.mixtures
    for stage in variant_stages:
        pod = _pod_spec(executor.render(StageJob(stage.name, stage.job_argv(ROOT), Path("s.log")), "hicom-s-abc123")[1])
        container = pod["containers"][0]
        [volume] = [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        [shared] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
        command = container["command"]
        read = [command[command.index("--params") + 1], *plan.mixtures]
        for path in read:
            assert posixpath.join(container["workingDir"], path).startswith(shared + "/"), (stage.name, path)


def test_a_per_command_setting_that_is_not_a_resource_fails_naming_it():
    from flows.errors import PipelineError
    from flows.executors import executor_kind
    with pytest.raises(PipelineError, match=r"pipeline\.clusters\.kubernetes\.per_command\.train\.cpus: unknown"):
        executor_kind("kubernetes").settings("kubernetes", {"per_command": {"train": {"cpus": "16"}}})


def test_job_names_are_dns_labels_even_for_odd_stage_names():
    name = job_name("Cond_Pretrain / Stage 2 " + "x" * 80)
    assert len(name) <= 63 and name.startswith("hicom-cond-pretrain-stage-2-")
    assert all(c.isalnum() and c.islower() or c.isdigit() or c == "-" for c in name)


# ---- states: the client's own V1Job/V1Pod objects ----

def _job(*conditions: tuple[str, str], ready: int = 0, active: int = 0, suspend: bool = False) -> V1Job:
    status = V1JobStatus(active=active, ready=ready,
                         conditions=[V1JobCondition(type=t, status="True", reason=r) for t, r in conditions])
    return V1Job(metadata=V1ObjectMeta(name="j", uid="u-1"),
                 spec=V1JobSpec(template=V1PodTemplateSpec(), suspend=suspend), status=status)


def _pod(index: str = "0", exit_code: int | None = None, disruption: str | None = None, phase: str = "Running"):
    state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=exit_code)) \
        if exit_code is not None else V1ContainerState()
    conditions = [V1PodCondition(type="DisruptionTarget", status="True", reason=disruption)] if disruption else []
    return V1Pod(metadata=V1ObjectMeta(name=f"j-{index}-xyz",
                                       annotations={"batch.kubernetes.io/job-completion-index": index}),
                 status=V1PodStatus(phase=phase, conditions=conditions,
                                    container_statuses=[V1ContainerStatus(name="stage", state=state, image="i",
                                                                          image_id="", ready=False,
                                                                          restart_count=0)]))


@pytest.mark.parametrize("job, pods, expected", [
    (_job(), [_pod(phase="Pending")], (JobState.PENDING, None)),
    (_job(suspend=True), [], (JobState.PENDING, None)),
    (_job(ready=2, active=2), [_pod(), _pod("1")], (JobState.RUNNING, None)),
    (_job(("Complete", "Completed")), [_pod(exit_code=0)], (JobState.COMPLETED, 0)),
    (_job(("Failed", "PodFailurePolicy")), [_pod(exit_code=0), _pod("1", exit_code=3)], (JobState.FAILED, 3)),
    (_job(("Failed", "BackoffLimitExceeded")), [_pod(exit_code=1)], (JobState.FAILED, 1)),
    (_job(("Failed", "DeadlineExceeded")), [_pod(exit_code=137)], (JobState.TIMEOUT, 137)),
    (_job(("FailureTarget", "PodFailurePolicy")), [_pod(exit_code=143, disruption="PreemptionByScheduler")],
     (JobState.PREEMPTED, 143)),
    (_job(("Failed", "PodFailurePolicy")), [_pod(disruption="DeletionByTaintManager")], (JobState.NODE_FAIL, None)),
], ids=["pending", "suspended", "running", "completed", "failed-exit", "failed-backoff", "timeout", "preempted",
        "node-fail"])
def test_job_and_pod_status_map_onto_job_states(job, pods, expected):
    assert job_state(job, pods) == expected


class FakeBatch:
    """BatchV1Api's methods the executor calls, keeping V1Job objects in memory."""

    def __init__(self):
        self.jobs: dict[str, V1Job] = {}
        self.created: list[dict] = []

    def create_namespaced_job(self, namespace, body):
        self.created.append(body)
        name = body["metadata"]["name"]
        self.jobs[name] = _job()
        self.jobs[name].metadata = V1ObjectMeta(name=name, namespace=namespace, uid=f"uid-{name}")
        return self.jobs[name]

    def read_namespaced_job_status(self, name, namespace):
        if name not in self.jobs:
            raise ApiException(status=404, reason="Not Found")
        return self.jobs[name]

    def delete_namespaced_job(self, name, namespace, propagation_policy=None):
        if self.jobs.pop(name, None) is None:
            raise ApiException(status=404, reason="Not Found")


class FakeCore:
    """CoreV1Api's methods the executor calls: Services, the Job's pods and pod 0's growing log."""

    def __init__(self):
        self.services: list[dict] = []
        self.pods: list[V1Pod] = []
        self.log = ""

    def create_namespaced_service(self, namespace, body):
        self.services.append(body)

    def list_namespaced_pod(self, namespace, label_selector):
        return V1PodList(items=self.pods)

    def read_namespaced_pod_log(self, name, namespace, container):
        assert (name, container) == ("j-0-xyz", "stage")
        return self.log


@pytest.fixture
def cluster():
    batch, core = FakeBatch(), FakeCore()
    return batch, core, KubernetesExecutor(KubernetesSettings(namespace="ml"), batch_api=batch, core_api=core)


def test_submit_creates_the_job_and_a_service_owned_by_it(cluster, tmp_path):
    batch, core, executor = cluster
    handle = executor.submit(StageJob("align", ["train", "--stage", "align"], tmp_path / "align.log", nodes=2))
    namespace, name = handle.split("/")
    assert namespace == "ml" and batch.created[0]["metadata"]["name"] == name
    assert core.services[0]["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": f"uid-{name}", "blockOwnerDeletion": False}]
    _validate(core.services[0])


def test_polling_streams_pod_0_log_into_the_stage_log_and_ends_with_the_jobs_outcome(cluster, tmp_path):
    batch, core, executor = cluster
    job = StageJob("align", ["train"], tmp_path / "align.log")
    handle = executor.submit(job)
    name = handle.split("/")[1]
    core.pods = [_pod(phase="Pending")]
    assert executor.poll(handle) == (JobState.PENDING, None)
    batch.jobs[name] = _job(ready=1, active=1)
    core.pods, core.log = [_pod()], "step 1 loss 2.0\n"
    assert executor.poll(handle) == (JobState.RUNNING, None)
    core.log += "step 2 loss 1.5\nTraceback: boom\n"
    batch.jobs[name] = _job(("Failed", "PodFailurePolicy"))
    core.pods = [_pod(exit_code=1)]
    assert executor.poll(handle) == (JobState.FAILED, 1)
    assert job.log_path.read_text() == "step 1 loss 2.0\nstep 2 loss 1.5\nTraceback: boom\n"


def test_run_job_reports_a_failure_with_the_pod_log_tail(cluster, tmp_path):
    batch, core, executor = cluster
    original_submit = executor.submit

    def submit_and_fail(job):
        handle = original_submit(job)
        batch.jobs[handle.split("/")[1]] = _job(("Failed", "BackoffLimitExceeded"))
        core.pods, core.log = [_pod(exit_code=2)], "loading data\nValueError: no shards in outputs/curate\n"
        return handle

    executor.submit = submit_and_fail
    result = run_job(executor, StageJob("curate", ["curate"], tmp_path / "curate.log"), poll_interval_s=0)
    assert (result.state, result.returncode) == (JobState.FAILED, 2)
    assert "ValueError: no shards in outputs/curate" in result.message


def test_cancel_deletes_the_job_and_it_then_reads_as_cancelled(cluster, tmp_path):
    batch, core, executor = cluster
    handle = executor.submit(StageJob("sft", ["train"], tmp_path / "sft.log"))
    executor.cancel(handle)
    assert batch.jobs == {}
    assert executor.poll(handle) == (JobState.CANCELLED, None)
    executor.cancel(handle)  # a second cancel (the flow's cleanup after ours) is harmless
