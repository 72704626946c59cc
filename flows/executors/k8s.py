"""Run a stage as a distributed Kubernetes Job: an indexed Job (one pod per node) and a headless Service.

Made from `infra/k8s/train-job.yaml.j2` and created through the Kubernetes Python client. Each pod runs torchrun
(or the plain stage command for one process), meeting at a c10d rendezvous on pod 0. Polling reads the Job's
conditions and its pods, streams pod 0's log (rank 0: the one that logs) into the stage's log file, and maps the
outcome onto the states Slurm uses: Complete -> COMPLETED, DeadlineExceeded -> TIMEOUT, a pod disrupted by
preemption or eviction -> PREEMPTED, by a lost node -> NODE_FAIL, any other failure -> FAILED, a Job deleted
-> CANCELLED. Cancel deletes the Job (its pods and Service go with it).
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from kubernetes.client import V1Job, V1Pod
from kubernetes.client.exceptions import ApiException

from flows.errors import PipelineError
from flows.executors.base import JobState, StageJob

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "k8s"

# Why Kubernetes marked a pod DisruptionTarget -> what happened to the stage.
DISRUPTIONS = {
    "PreemptionByScheduler": JobState.PREEMPTED, "PreemptionByKubeScheduler": JobState.PREEMPTED,
    "EvictionByEvictionAPI": JobState.PREEMPTED,
    "DeletionByTaintManager": JobState.NODE_FAIL, "DeletionByPodGC": JobState.NODE_FAIL,
    "TerminationByKubelet": JobState.NODE_FAIL,
}


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and with what a stage runs on the cluster; the StageJob says how big it is."""

    namespace: str = "hicom"
    image: str = field(default_factory=lambda: os.environ.get("HICOM_IMAGE", "hicom-ops:latest"))
    image_pull_policy: str = "IfNotPresent"
    workdir: str = "/opt/hicom-ops"  # the project inside the image (prefect.yaml's $HICOM_IMAGE_PROJECT_DIR)
    volume_claim: str | None = "hicom-data"  # a shared PVC for outputs/, mounted at <workdir>/outputs
    secrets: tuple[str, ...] = ("hicom-s3-credentials",)  # envFrom: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    config_maps: tuple[str, ...] = ("hicom-stack",)  # envFrom: MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, ...
    service_account: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    cpu: str = "2"  # a stage without a per_command entry: data preparation, reports
    memory: str = "8Gi"
    gpu_resource: str = "nvidia.com/gpu"
    python: str = "python"
    module: str = "hicom"
    rdzv_port: int = 29500
    requeue: bool = True  # recreate pods lost to preemption/eviction instead of failing the Job
    ttl_after_finished_s: int = 86400
    # hicom command -> its own image, cpu, memory, node_selector (GPUs: pipeline.resources.<command>)
    per_command: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        for command, overrides in self.per_command.items():
            for key in overrides:
                if key not in PER_COMMAND:
                    raise PipelineError(f"params.yaml: pipeline.clusters.kubernetes.per_command.{command}.{key}: "
                                        f"unknown key (known: {', '.join(PER_COMMAND)})")

    def for_command(self, command: str) -> KubernetesSettings:
        """These settings with the command's own image and resources."""
        return dataclasses.replace(self, **self.per_command.get(command, {}))


PER_COMMAND = ("image", "cpu", "memory", "node_selector")


def thread_env(cpu: str, processes: int) -> dict[str, str]:
    """torch's threads in each of a pod's processes: its CPU request shared among them (at least 1). Left alone,
    torch takes every core it sees, which in a container is the node's, not the pod's share; torchrun gives each of
    several processes 1. The stage's own environment (params.yaml threads_per_process) overrides this."""
    from kubernetes.utils.quantity import parse_quantity

    threads = str(max(1, int(parse_quantity(cpu) // processes)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def job_name(stage: str) -> str:
    """A DNS-1035 label (Service names need one): 'hicom-<stage>-<random>', at most 63 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")[:40] or "stage"
    return f"hicom-{slug}-{secrets.token_hex(3)}"


@dataclass
class _Created:
    job: StageJob
    log_chars: int = 0  # how much of pod 0's log is already in the stage's log file


class KubernetesExecutor:
    """Executor on a Kubernetes cluster. Handles are 'namespace/job-name'.

    batch_api / core_api: kubernetes.client.BatchV1Api / CoreV1Api; by default built from the in-cluster
    service account, else from ~/.kube/config.
    """

    def __init__(self, settings: KubernetesSettings | None = None, *, batch_api=None, core_api=None):
        self.settings = settings or KubernetesSettings()
        if batch_api is None or core_api is None:
            from kubernetes import client, config
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            batch_api, core_api = client.BatchV1Api(), client.CoreV1Api()
        self.batch = batch_api
        self.core = core_api
        self._jobs: dict[str, _Created] = {}

    def render(self, job: StageJob, name: str) -> tuple[dict, dict]:
        """The (Service, Job) manifests for `job`, named `name`."""
        s = self.settings.for_command(job.argv[0] if job.argv else "")
        gpus = {s.gpu_resource: str(job.gpus_per_node)} if job.gpus_per_node else {}
        if job.nodes > 1 or job.nproc_per_node > 1:
            command = [s.python, "-m", "torch.distributed.run", f"--nnodes={job.nodes}",
                       f"--nproc_per_node={job.nproc_per_node}", "--rdzv_backend=c10d",
                       f"--rdzv_endpoint={name}-0.{name}:{s.rdzv_port}", f"--rdzv_id={name}",
                       f"--max_restarts={3 if s.requeue else 0}", "-m", s.module, *job.argv]
        else:
            command = [s.python, "-m", s.module, *job.argv]
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
        text = environment.get_template("train-job.yaml.j2").render(
            name=name, namespace=s.namespace, stage=re.sub(r"[^A-Za-z0-9_.-]", "-", job.name)[:63],
            nodes=job.nodes, time_limit_s=job.time_limit_s, ttl_after_finished_s=s.ttl_after_finished_s,
            requeue=s.requeue, service_account=s.service_account, node_selector=s.node_selector, image=s.image,
            image_pull_policy=s.image_pull_policy, workdir=s.workdir, command=command,
            env=[{"name": k, "value": v} for k, v in {"PYTHONUNBUFFERED": "1", **thread_env(s.cpu, job.nproc_per_node),
                                                       **job.env}.items()],
            secrets=s.secrets, config_maps=s.config_maps, rdzv_port=s.rdzv_port,
            requests={"cpu": s.cpu, "memory": s.memory, **gpus}, limits={"memory": s.memory, **gpus},
            volume_claim=s.volume_claim)
        service, job_manifest = yaml.safe_load_all(text)
        return service, job_manifest

    def submit(self, job: StageJob) -> str:
        name = job_name(job.name)
        service, manifest = self.render(job, name)
        namespace = self.settings.namespace
        created: V1Job = self.batch.create_namespaced_job(namespace, manifest)
        # Owned by the Job: deleting the Job (by hand or by its TTL) deletes the Service too.
        service["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                   "uid": created.metadata.uid, "blockOwnerDeletion": False}]
        self.core.create_namespaced_service(namespace, service)
        handle = f"{namespace}/{name}"
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        self._jobs[handle] = _Created(job)
        return handle

    def poll(self, handle: str) -> tuple[JobState, int | None]:
        namespace, name = handle.split("/", 1)
        try:
            status: V1Job = self.batch.read_namespaced_job_status(name, namespace)
        except ApiException as e:
            if e.status == 404:  # deleted: by our cancel, or by someone else
                return JobState.CANCELLED, None
            raise
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"hicom/job={name}").items
        self._stream_log(handle, pods)
        return job_state(status, pods)

    def cancel(self, handle: str) -> None:
        """Delete the Job and, through it, its pods and Service. Deleting a Job already gone is no error."""
        namespace, name = handle.split("/", 1)
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise

    def _stream_log(self, handle: str, pods: list[V1Pod]) -> None:
        """Append what is new in pod 0's log (rank 0) to the stage's log file."""
        created = self._jobs.get(handle)
        first = [p for p in pods if _index(p) == "0" and p.status and p.status.phase != "Pending"]
        if created is None or not first:
            return
        namespace = handle.split("/", 1)[0]
        try:
            text = self.core.read_namespaced_pod_log(first[0].metadata.name, namespace, container="stage")
        except ApiException:
            return  # not started yet, or already gone: the next poll tries again
        if len(text) > created.log_chars:
            with open(created.job.log_path, "a") as log:
                log.write(text[created.log_chars:])
            created.log_chars = len(text)


def _index(pod: V1Pod) -> str | None:
    return (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")


def job_state(job: V1Job, pods: list[V1Pod]) -> tuple[JobState, int | None]:
    """Map a Job's status (and its pods') onto JobState and the stage's exit code."""
    conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
    code = _exit_code(pods)
    if "Complete" in conditions:
        return JobState.COMPLETED, 0
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        if failed.reason == "DeadlineExceeded":
            return JobState.TIMEOUT, code
        return _disruption(pods) or JobState.FAILED, code
    if job.spec is not None and job.spec.suspend:
        return JobState.PENDING, None  # a queue (Kueue) holds it, or it was preempted and waits to resume
    if (job.status.ready or 0) > 0:
        return JobState.RUNNING, None
    return JobState.PENDING, None


def _disruption(pods: list[V1Pod]) -> JobState | None:
    for pod in pods:
        for condition in (pod.status.conditions or []) if pod.status else []:
            if condition.type == "DisruptionTarget" and condition.status == "True":
                return DISRUPTIONS.get(condition.reason, JobState.PREEMPTED)
    return None


def _exit_code(pods: list[V1Pod]) -> int | None:
    """The first non-zero exit code of a stage container (any pod), else 0 if one ended, else None."""
    codes = []
    for pod in pods:
        for container in (pod.status.container_statuses or []) if pod.status else []:
            terminated = container.state.terminated if container.state else None
            if container.name == "stage" and terminated is not None:
                codes.append(terminated.exit_code)
    return next((c for c in codes if c != 0), 0 if codes else None)
