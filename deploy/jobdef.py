"""Render and verify the AWS Batch job definition of the video worker.

``python -m deploy.jobdef render [options]`` prints the job definition as JSON,
ready for ``aws batch register-job-definition --cli-input-json file://jobdef.json``.

``python -m deploy.jobdef verify FILE|-`` checks a job definition, or the
response of ``aws batch describe-job-definitions`` (``{"jobDefinitions": [...]}``:
the newest ACTIVE revision, or every one with ``--all``), against the plan of
record; it prints one PASS/FAIL line per check and exits 1 if any fails
(2 if the input is not a job definition).

Plan-of-record invariants: name academy-video-batch-jobdef,
retryStrategy.attempts exactly 1 (retries happen only through the web app's
stuck-job scan), timeout 14400 s, log group /aws/batch/academy-video-worker,
region ap-northeast-2, image academy-video-worker in ECR, ARM64 (compute
environment academy-video-batch-ce-v3 runs the ARM64 ECS AMI).

How the ARM64 rule is verified. On EC2 a job definition records no CPU
architecture (``runtimePlatform`` is Fargate-only; the compute environment's
AMI and instance types decide), so a definition alone cannot prove it. The
rule checked here: the image reference must not name an x86 build (amd64,
x86_64, x86), and either names an arm64/aarch64 build or the definition
carries the tag ``architecture=arm64``. That tag is a declaration, backed by
the chain: the only producer of the academy-video-worker repository is
docker/arm64/Dockerfile, whose stages ``deploy.dockercheck`` requires to be
``--platform=linux/arm64``. ``--image-manifest FILE`` closes the gap for real:
given the manifest list / OCI index (``docker buildx imagetools inspect --raw``)
or the image config (``crane config``), every platform must be arm64. A
``runtimePlatform`` that says anything but ARM64 fails whatever the image.

Secrets. The API token and the storage keys come from SSM/Secrets Manager
(``secrets``), never from plain ``environment``: verify fails on a plain
variable whose name says secret, on a plain value shaped like one under any
name (an AWS access key id, a long random token of mixed-case letters and
digits), and on a ``JOB_API_URL`` with user info, a query or a fragment.
Details name the variables, never their values.

How the exit codes and the definition agree (worker/exit_codes.py). With
attempts = 1 Batch never retries, whatever the code; so the definition carries
no ``evaluateOnExit`` rule that says RETRY, and documents the table in its
tags (``worker-exit-codes``, ``worker-retryable-exit-codes``), rendered from
the enum: verify fails when the registered tags no longer match the code. The
worker's codes must be distinct and within 0..125, so they never collide with
126/127 (cannot execute / not found) or 128+N (killed by signal N: 137 is the
SIGKILL that follows SIGTERM after the stop timeout, or an out-of-memory kill).

CPU budget. On EC2, Batch turns VCPU into Docker CPU *shares*: a relative
weight, not a quota, so the container sees no cgroup CPU limit and the
transcoder would plan threads for the whole host. The definition therefore
passes the vCPU count to the worker (``TRANSCODE_THREADS``), which hands it to
the transcoder as the explicit budget; verify checks the two agree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from worker.exit_codes import RETRYABLE, ExitCode

from . import TEMPLATE

JOB_DEFINITION_NAME = "academy-video-batch-jobdef"
REGION = "ap-northeast-2"
TIMEOUT_S = 14400
ATTEMPTS = 1
LOG_GROUP = "/aws/batch/academy-video-worker"
IMAGE_REPOSITORY = "academy-video-worker"
# The plan names the roles only by purpose (job role: SSM, ECR, CloudWatch;
# execution role: image pull, logs). These names are this repository's choice;
# --job-role/--execution-role override them (a name or a full ARN).
DEFAULT_JOB_ROLE = "academy-video-batch-job-role"
DEFAULT_EXECUTION_ROLE = "academy-video-batch-execution-role"
# 4 vCPUs: a 3-hour lecture must finish inside the 4-hour timeout (a 2-vCPU job
# runs the 1080p ladder at about real time). 7168 MiB leaves room for the ECS
# agent's reservation on an 8 GiB c7g.xlarge. Both are overridable.
DEFAULT_VCPUS = 4
DEFAULT_MEMORY_MIB = 7168
MIN_MEMORY_MIB = 2048
DEFAULT_API_URL = "https://api.example.invalid"
# Where ladders go and the R2 endpoint: the plan of record names neither, so
# these are placeholders to override (--hls-output-uri, --r2-endpoint).
DEFAULT_HLS_OUTPUT_URI = "s3://academy-video-hls/hls/"
DEFAULT_R2_ENDPOINT = "https://r2-account-id.r2.cloudflarestorage.com"
# The container's entrypoint (docker/arm64/Dockerfile): the job command is appended to it.
ENTRYPOINT = "transcode-worker"
# Environment variable the worker reads for the transcoder's CPU budget (see module docstring).
THREADS_ENV = "TRANSCODE_THREADS"

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|ACCESS_KEY|CREDENTIAL|API_KEY", re.IGNORECASE)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:(ssm|secretsmanager):[a-z0-9-]+:\d{12}:(parameter/|secret:).+$")
# Values that are credentials whatever the variable is called: an AWS access key
# id, or a long random token (lower- and upper-case letters and digits, as in
# an AWS secret key; no ``:`` or ``.``, which URLs, hosts and ARNs have).
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")
_RANDOM_TOKEN = re.compile(r"^[A-Za-z0-9+/=_-]{24,}$")
_X86_MARKERS = re.compile(r"(amd64|x86[_-]?64|\bx86\b|intel)", re.IGNORECASE)
_ARM_MARKERS = re.compile(r"(arm64|aarch64|graviton)", re.IGNORECASE)


def exit_code_table() -> str:
    """The worker's exit-code table as a tag value ("0=OK 1=INTERNAL ...")."""
    return " ".join(f"{code.value}={code.name}" for code in ExitCode)


def retryable_exit_codes() -> str:
    return " ".join(str(code.value) for code in sorted(RETRYABLE))


# --- render -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """Overrides for the template. ``account_id`` None leaves ``${ACCOUNT_ID}`` in place (verify fails on it)."""

    account_id: str | None = None
    region: str = REGION
    image: str | None = None  # full image URI; default: the account's ECR academy-video-worker:latest
    vcpus: int = DEFAULT_VCPUS
    memory_mib: int = DEFAULT_MEMORY_MIB
    job_role: str = DEFAULT_JOB_ROLE  # a role name or a full ARN
    execution_role: str = DEFAULT_EXECUTION_ROLE
    api_url: str = DEFAULT_API_URL
    hls_output_uri: str = DEFAULT_HLS_OUTPUT_URI
    r2_endpoint: str = DEFAULT_R2_ENDPOINT
    environment: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> SSM parameter / Secrets Manager ARN
    sets: tuple[tuple[str, Any], ...] = ()  # (dotted path, value), applied last


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def _role_name(role: str) -> str:
    return role.rsplit("/", 1)[-1] if role.startswith("arn:") else role


def _upsert(items: list[dict[str, Any]], name: str, key: str, value: str) -> None:
    for item in items:
        if item.get("name") == name:
            item[key] = value
            return
    items.append({"name": name, key: value})


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.0.c`` in ``document`` (list indices are numbers; missing objects are created)."""
    keys = path.split(".")
    node: Any = document
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise KeyError(f"{path}: no list index {key!r}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise KeyError(f"{path}: {'.'.join(keys[:i])} is not an object or a list")


def render(options: RenderOptions | None = None, *, template: Path = TEMPLATE) -> dict[str, Any]:
    """The job definition (``register-job-definition`` input shape) from the template and ``options``."""
    options = options or RenderOptions()
    variables = {
        "REGION": options.region,
        "VCPUS": str(options.vcpus),
        "MEMORY_MIB": str(options.memory_mib),
        "JOB_ROLE": _role_name(options.job_role),
        "EXECUTION_ROLE": _role_name(options.execution_role),
        "API_URL": options.api_url,
        "HLS_OUTPUT_URI": options.hls_output_uri,
        "R2_ENDPOINT": options.r2_endpoint,
        "EXIT_CODES": exit_code_table(),
        "RETRYABLE_EXIT_CODES": retryable_exit_codes(),
    }
    if options.account_id is not None:
        variables["ACCOUNT_ID"] = options.account_id
    document: dict[str, Any] = _substitute(json.loads(template.read_text()), variables)
    container = document["containerProperties"]
    if options.image is not None:
        container["image"] = options.image
    if options.job_role.startswith("arn:"):
        container["jobRoleArn"] = options.job_role
    if options.execution_role.startswith("arn:"):
        container["executionRoleArn"] = options.execution_role
    for name, value in options.environment.items():
        _upsert(container.setdefault("environment", []), name, "value", value)
    for name, arn in options.secrets.items():
        _upsert(container.setdefault("secrets", []), name, "valueFrom", arn)
    for path, value in options.sets:
        set_path(document, path, value)
    return document


def placeholders(document: Any) -> list[str]:
    """Unrendered ``${NAME}`` placeholders anywhere in ``document``."""
    found: list[str] = []
    if isinstance(document, str):
        found.extend(m.group(0) for m in _PLACEHOLDER.finditer(document))
    elif isinstance(document, list):
        for v in document:
            found.extend(placeholders(v))
    elif isinstance(document, dict):
        for v in document.values():
            found.extend(placeholders(v))
    return sorted(set(found))


# --- verify -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One verified invariant: its name, whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class NotAJobDefinitionError(ValueError):
    """The input is neither a job definition nor a describe-job-definitions response."""


def select_definitions(document: Any, *, every: bool = False) -> list[dict[str, Any]]:
    """The job definition(s) to verify in ``document``.

    A describe-job-definitions response gives the newest ACTIVE revision (all
    revisions with ``every``); a single definition is itself.
    """
    if isinstance(document, dict) and "jobDefinitions" in document:
        found = document["jobDefinitions"]
        if not isinstance(found, list) or not all(isinstance(d, dict) for d in found):
            raise NotAJobDefinitionError("jobDefinitions is not a list of objects")
        if not found:
            raise NotAJobDefinitionError("the response lists no job definitions (wrong name or none ACTIVE)")
        if every:
            return list(found)
        active = [d for d in found if d.get("status", "ACTIVE") == "ACTIVE"] or list(found)
        return [max(active, key=lambda d: int(d.get("revision", 0)))]
    if isinstance(document, dict) and "jobDefinitionName" in document:
        return [document]
    if isinstance(document, list) and document and all(isinstance(d, dict) for d in document):
        return list(document)
    raise NotAJobDefinitionError("expected a job definition or {'jobDefinitions': [...]}")


def _requirements(container: dict[str, Any]) -> dict[str, str]:
    found = {
        str(r.get("type")): str(r.get("value"))
        for r in container.get("resourceRequirements") or []
        if isinstance(r, dict)
    }
    # Legacy fields (still returned for old registrations).
    if "VCPU" not in found and container.get("vcpus") is not None:
        found["VCPU"] = str(container["vcpus"])
    if "MEMORY" not in found and container.get("memory") is not None:
        found["MEMORY"] = str(container["memory"])
    return found


def _as_int(text: str | None) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def _manifest_architectures(manifest: dict[str, Any]) -> list[str] | None:
    """Architectures named by a manifest list / OCI index or an image config; None if it names none."""
    if isinstance(manifest.get("manifests"), list):
        archs = []
        for entry in manifest["manifests"]:
            platform = entry.get("platform") if isinstance(entry, dict) else None
            if not isinstance(platform, dict):
                continue
            if platform.get("os") == "unknown":
                continue  # BuildKit's attestation manifests
            archs.append(str(platform.get("architecture", "")))
        return archs or None
    if "architecture" in manifest:
        return [str(manifest["architecture"])]
    return None


def looks_like_a_secret(value: str) -> bool:
    """Whether a plain environment value is a credential by its shape, whatever its name."""
    if _AWS_KEY_ID.search(value):
        return True
    if not _RANDOM_TOKEN.match(value):
        return False
    classes = sum(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit))
    return classes == 3


def check_architecture(definition: dict[str, Any], manifest: dict[str, Any] | None = None) -> Check:
    """The ARM64 rule (module docstring)."""
    container = definition.get("containerProperties") or {}
    image = str(container.get("image", ""))
    runtime = container.get("runtimePlatform") or {}
    cpu = str(runtime.get("cpuArchitecture", "")) if isinstance(runtime, dict) else ""
    if cpu and cpu.upper() != "ARM64":
        return Check("arm64 image", False, f"runtimePlatform.cpuArchitecture = {cpu!r}, expected ARM64")
    tags = definition.get("tags") or {}
    declared = str(tags.get("architecture", "")).lower()
    reference = image.rsplit("/", 1)[-1]
    if _X86_MARKERS.search(reference):
        return Check("arm64 image", False, f"image {image!r} names an x86 build")
    if declared and declared not in {"arm64", "aarch64"}:
        return Check("arm64 image", False, f"tag architecture={declared!r}, expected arm64")
    if manifest is not None:
        archs = _manifest_architectures(manifest)
        if archs is None:
            return Check(
                "arm64 image",
                False,
                "the manifest names no architecture (a single-image manifest): pass the manifest list or image config",
            )
        if any(a != "arm64" for a in archs):
            return Check("arm64 image", False, f"image manifest architectures {archs}, expected only arm64")
        return Check("arm64 image", True, f"image manifest architectures {archs}")
    if _ARM_MARKERS.search(reference):
        return Check("arm64 image", True, f"image {image!r} names an arm64 build")
    if declared in {"arm64", "aarch64"}:
        return Check(
            "arm64 image",
            True,
            f"tag architecture={declared} on {reference!r} (built only by docker/arm64/Dockerfile, linux/arm64)",
        )
    return Check(
        "arm64 image",
        False,
        f"image {image!r} does not name arm64 and the definition has no architecture=arm64 tag",
    )


def check_exit_codes(definition: dict[str, Any]) -> list[Check]:
    """The worker's exit-code table: sane on its own, and what the definition documents."""
    checks = []
    values = [code.value for code in ExitCode]
    names = list(ExitCode.__members__)
    distinct = len(names) == len(set(values)) == len(values)
    in_range = all(0 <= v <= 125 for v in values)
    checks.append(
        Check(
            "exit codes distinct, 0..125",
            distinct and in_range and int(ExitCode.OK) == 0 and ExitCode.OK not in RETRYABLE,
            f"{exit_code_table()} (126/127 and 128+N stay the shell's and the kernel's: 137 = SIGKILL or OOM)",
        )
    )
    tags = definition.get("tags") or {}
    documented = (tags.get("worker-exit-codes"), tags.get("worker-retryable-exit-codes"))
    expected = (exit_code_table(), retryable_exit_codes())
    checks.append(
        Check(
            "exit-code tags match worker/exit_codes.py",
            documented == expected,
            "tags match" if documented == expected else f"tags {documented!r}, code says {expected!r}",
        )
    )
    return checks


def verify(definition: dict[str, Any], *, manifest: dict[str, Any] | None = None) -> list[Check]:
    """Every check of one job definition, in a fixed order."""
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    container = definition.get("containerProperties")
    container = container if isinstance(container, dict) else {}
    name = definition.get("jobDefinitionName")
    check("name", name == JOB_DEFINITION_NAME, f"{name!r} (expected {JOB_DEFINITION_NAME!r})")
    if "status" in definition:
        check("status", definition["status"] == "ACTIVE", str(definition["status"]))
    check("type", definition.get("type") == "container", f"{definition.get('type')!r}")
    capabilities = definition.get("platformCapabilities") or ["EC2"]  # Batch's default is EC2
    check("platform EC2", capabilities == ["EC2"], f"{capabilities} (the ARM64 ECS AMI compute environment)")

    retry = definition.get("retryStrategy") or {}
    attempts = retry.get("attempts") if isinstance(retry, dict) else None
    check(
        "retryStrategy.attempts == 1",
        type(attempts) is int and attempts == ATTEMPTS,
        f"attempts = {attempts!r}; retries belong to the web app's stuck-job scan",
    )
    rules = (retry.get("evaluateOnExit") or []) if isinstance(retry, dict) else []
    retrying = [r for r in rules if isinstance(r, dict) and str(r.get("action", "")).upper() == "RETRY"]
    check(
        "no evaluateOnExit RETRY rule",
        not retrying,
        f"{len(rules)} rule(s), {len(retrying)} say RETRY" if rules else "no rules (attempts = 1 retries nothing)",
    )
    timeout = (definition.get("timeout") or {}).get("attemptDurationSeconds")
    check(f"timeout {TIMEOUT_S} s", timeout == TIMEOUT_S, f"attemptDurationSeconds = {timeout!r}")

    image = str(container.get("image", ""))
    ecr = re.compile(rf"^\d{{12}}\.dkr\.ecr\.{re.escape(REGION)}\.amazonaws\.com/{IMAGE_REPOSITORY}[:@]")
    check(
        "image in ECR", bool(ecr.match(image)), f"{image!r} (expected <account>.dkr.ecr.{REGION}.../{IMAGE_REPOSITORY})"
    )
    checks.append(check_architecture(definition, manifest))

    command = container.get("command") or []
    params = definition.get("parameters") or {}
    refs = [arg[5:] for arg in command if isinstance(arg, str) and arg.startswith("Ref::")]
    missing = [r for r in refs if r not in params]
    command_ok = "job_id" in refs and not missing and bool(command) and command[0] != ENTRYPOINT
    detail = f"command {command}, parameters {sorted(params)}"
    if command and command[0] == ENTRYPOINT:
        detail += f"; the image's ENTRYPOINT is already {ENTRYPOINT!r} (Batch's command is appended to it)"
    if missing:
        detail += f"; Ref:: without a parameter: {missing}"
    check("job id parameter", command_ok, detail)

    linux = container.get("linuxParameters") or {}
    check(
        "initProcessEnabled",
        linux.get("initProcessEnabled") is True,
        f"linuxParameters.initProcessEnabled = {linux.get('initProcessEnabled')!r} (PID 1 forwards SIGTERM, reaps)",
    )

    requirements = _requirements(container)
    vcpus, memory = _as_int(requirements.get("VCPU")), _as_int(requirements.get("MEMORY"))
    check(
        "vCPU and memory",
        vcpus is not None and vcpus >= 1 and memory is not None and memory >= MIN_MEMORY_MIB,
        f"VCPU {requirements.get('VCPU')!r}, MEMORY {requirements.get('MEMORY')!r} MiB (memory >= {MIN_MEMORY_MIB})",
    )
    environment = {
        str(e.get("name")): str(e.get("value")) for e in container.get("environment") or [] if isinstance(e, dict)
    }
    threads = environment.get(THREADS_ENV)
    check(
        "thread budget = vCPU",
        threads is not None and vcpus is not None and _as_int(threads) == vcpus,
        f"{THREADS_ENV}={threads!r}, VCPU {vcpus!r} (on EC2 vCPUs are CPU shares, not a quota the worker could see)",
    )

    logs = container.get("logConfiguration") or {}
    options = logs.get("options") or {}
    check(
        "awslogs group",
        logs.get("logDriver") == "awslogs"
        and options.get("awslogs-group") == LOG_GROUP
        and options.get("awslogs-region") == REGION,
        f"{logs.get('logDriver')!r} group {options.get('awslogs-group')!r} region {options.get('awslogs-region')!r}",
    )
    job_role, execution_role = str(container.get("jobRoleArn", "")), str(container.get("executionRoleArn", ""))
    check(
        "job and execution roles",
        bool(_ROLE_ARN.match(job_role)) and bool(_ROLE_ARN.match(execution_role)),
        f"job {job_role!r}, execution {execution_role!r}",
    )
    leaked = sorted(n for n, v in environment.items() if _SECRET_NAME.search(n) or looks_like_a_secret(v))
    reserved = sorted(n for n in environment if n.startswith("AWS_BATCH"))
    secrets = [s for s in container.get("secrets") or [] if isinstance(s, dict)]
    bad_refs = sorted(str(s.get("name")) for s in secrets if not _SECRET_ARN.match(str(s.get("valueFrom", ""))))
    check(
        "no secrets in environment",
        not leaked and not reserved and not bad_refs,
        f"plain env {sorted(environment)}; secrets {sorted(str(s.get('name')) for s in secrets)}"
        + (f"; secret-like plain values {leaked}" if leaked else "")
        + (f"; reserved AWS_BATCH names {reserved}" if reserved else "")
        + (f"; secrets not from SSM/Secrets Manager ARNs {bad_refs}" if bad_refs else ""),
    )
    api_url = environment.get("JOB_API_URL")
    parts = urlsplit(api_url) if api_url else None
    check(
        "job API URL",
        parts is not None
        and parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
        and not parts.query
        and not parts.fragment,
        "JOB_API_URL missing"
        if parts is None
        else f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        + (" with user info (a credential in plain environment)" if parts.username or parts.password else "")
        + (" with a query or fragment" if parts.query or parts.fragment else ""),
    )
    left = placeholders(definition)
    check("rendered", not left, f"unrendered {left}" if left else "no ${...} placeholders left")
    checks.extend(check_exit_codes(definition))
    return checks


# --- command line -------------------------------------------------------------------------------------------------


def _pairs(values: Iterable[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} must be NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.jobdef", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the job definition JSON (register-job-definition input)")
    r.add_argument("--account", dest="account_id", help="12-digit AWS account id (default: leave ${ACCOUNT_ID})")
    r.add_argument("--region", default=REGION)
    r.add_argument("--image", help="full image URI (default: <account>.dkr.ecr.<region>.amazonaws.com/...:latest)")
    r.add_argument("--vcpus", type=int, default=DEFAULT_VCPUS)
    r.add_argument("--memory", dest="memory_mib", type=int, default=DEFAULT_MEMORY_MIB, help="MiB")
    r.add_argument("--job-role", default=DEFAULT_JOB_ROLE, help="role name or ARN")
    r.add_argument("--execution-role", default=DEFAULT_EXECUTION_ROLE, help="role name or ARN")
    r.add_argument("--api-url", default=DEFAULT_API_URL, help="the job API (JOB_API_URL)")
    r.add_argument("--hls-output-uri", default=DEFAULT_HLS_OUTPUT_URI, help="s3://bucket/prefix/ (HLS_OUTPUT_URI)")
    r.add_argument("--r2-endpoint", default=DEFAULT_R2_ENDPOINT, help="R2's S3 endpoint (AWS_ENDPOINT_URL_S3)")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="add/replace an env variable")
    r.add_argument("--secret", action="append", default=[], metavar="NAME=ARN", help="add/replace a secret")
    r.add_argument(
        "--set", action="append", default=[], metavar="PATH=VALUE", help="set a dotted path (VALUE parsed as JSON)"
    )
    r.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    v = sub.add_parser("verify", help="check a job definition (or describe-job-definitions output)")
    v.add_argument("file", help="JSON file, or - for stdin")
    v.add_argument("--all", dest="every", action="store_true", help="verify every revision in a describe response")
    v.add_argument("--image-manifest", type=Path, help="manifest list / OCI index / image config JSON of the image")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "render":
        try:
            sets = tuple((path, _json_value(value)) for path, value in _pairs(args.set, "--set").items())
            options = RenderOptions(
                account_id=args.account_id,
                region=args.region,
                image=args.image,
                vcpus=args.vcpus,
                memory_mib=args.memory_mib,
                job_role=args.job_role,
                execution_role=args.execution_role,
                api_url=args.api_url,
                hls_output_uri=args.hls_output_uri,
                r2_endpoint=args.r2_endpoint,
                environment=_pairs(args.env, "--env"),
                secrets=_pairs(args.secret, "--secret"),
                sets=sets,
            )
            document = render(options)
        except (argparse.ArgumentTypeError, KeyError) as exc:
            parser.error(str(exc))
        text = json.dumps(document, indent=2) + "\n"
        if args.output is not None:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        left = placeholders(document)
        if left:
            print(f"jobdef: warning: unrendered placeholders {left} (pass --account)", file=sys.stderr)
        return 0
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        definitions = select_definitions(json.loads(text), every=args.every)
        manifest = json.loads(args.image_manifest.read_text()) if args.image_manifest else None
    except (OSError, json.JSONDecodeError, NotAJobDefinitionError) as exc:
        print(f"jobdef: error: {exc}", file=sys.stderr)
        return 2
    failed = False
    for definition in definitions:
        revision = definition.get("revision")
        label = f"{definition.get('jobDefinitionName')}" + (f":{revision}" if revision is not None else "")
        print(f"== {label}")
        for result in verify(definition, manifest=manifest):
            print(result.line())
            failed = failed or not result.ok
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


__all__ = [
    "Check",
    "NotAJobDefinitionError",
    "RenderOptions",
    "check_architecture",
    "check_exit_codes",
    "exit_code_table",
    "main",
    "placeholders",
    "render",
    "retryable_exit_codes",
    "select_definitions",
    "set_path",
    "verify",
]

if __name__ == "__main__":
    sys.exit(main())
