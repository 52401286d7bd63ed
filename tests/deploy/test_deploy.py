"""Tests for ``deploy``: the Batch job definition (render/verify) and the Dockerfile checks.

Each mutation of a good job definition or Dockerfile must fail exactly the
check that guards it. The wheel resolution test needs PyPI and is skipped
without it.
"""

from __future__ import annotations

import configparser
import copy
import io
import json
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy import DOCKERFILE, SETUP_CFG, TEMPLATE, dockercheck, jobdef
from deploy.dockercheck import (
    check_dockerfile,
    check_wheel_files,
    check_wheels,
    image_glibc,
    image_python,
    manylinux_platforms,
    parse_dockerfile,
    parse_image,
    runtime_requirements,
)
from deploy.jobdef import (
    Check,
    RenderOptions,
    check_architecture,
    looks_like_a_secret,
    render,
    select_definitions,
    verify,
)
from worker.exit_codes import RETRYABLE, ExitCode

ACCOUNT = "123456789012"
Mutation = Callable[[dict[str, Any]], None]


REPO = Path(__file__).resolve().parents[2]


def rendered(**overrides: Any) -> dict[str, Any]:
    return render(RenderOptions(account_id=ACCOUNT, **overrides))


def failures(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if not c.ok}


# --- job definition: render and verify ----------------------------------------------------------------------------


def test_rendered_definition_passes_every_check() -> None:
    checks = verify(rendered())
    assert failures(checks) == set()
    assert len(checks) >= 15


def test_rendered_definition_matches_the_plan_of_record() -> None:
    d = rendered()
    c = d["containerProperties"]
    assert d["jobDefinitionName"] == "academy-video-batch-jobdef"
    assert d["retryStrategy"] == {"attempts": 1}
    assert d["timeout"] == {"attemptDurationSeconds": 14400}
    assert d["platformCapabilities"] == ["EC2"]
    assert c["image"] == f"{ACCOUNT}.dkr.ecr.ap-northeast-2.amazonaws.com/academy-video-worker:latest"
    assert c["command"] == ["Ref::job_id"] and "job_id" in d["parameters"]
    assert c["linuxParameters"]["initProcessEnabled"] is True
    assert c["logConfiguration"]["options"]["awslogs-group"] == "/aws/batch/academy-video-worker"
    assert c["logConfiguration"]["options"]["awslogs-region"] == "ap-northeast-2"
    assert c["jobRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/academy-video-batch-job-role"
    assert c["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/academy-video-batch-execution-role"
    requirements = {r["type"]: r["value"] for r in c["resourceRequirements"]}
    assert requirements == {"VCPU": "4", "MEMORY": "7168"}
    assert {"name": "TRANSCODE_THREADS", "value": "4"} in c["environment"]
    assert all("TOKEN" not in e["name"] for e in c["environment"])
    assert c["secrets"][0]["valueFrom"].startswith(f"arn:aws:ssm:ap-northeast-2:{ACCOUNT}:parameter/")


def test_render_overrides() -> None:
    d = rendered(
        vcpus=8,
        memory_mib=15360,
        image=f"{ACCOUNT}.dkr.ecr.ap-northeast-2.amazonaws.com/academy-video-worker:v42-arm64",
        job_role=f"arn:aws:iam::{ACCOUNT}:role/custom-job",
        execution_role="custom-exec",
        api_url="https://api.example.com",
        environment={"LOG_LEVEL": "debug"},
        secrets={"R2_SECRET": f"arn:aws:secretsmanager:ap-northeast-2:{ACCOUNT}:secret:r2-abc"},
        sets=(("timeout.attemptDurationSeconds", 14400), ("tags.owner", "video")),
    )
    c = d["containerProperties"]
    assert {r["type"]: r["value"] for r in c["resourceRequirements"]} == {"VCPU": "8", "MEMORY": "15360"}
    assert {"name": "TRANSCODE_THREADS", "value": "8"} in c["environment"]
    assert {"name": "JOB_API_URL", "value": "https://api.example.com"} in c["environment"]
    assert {"name": "LOG_LEVEL", "value": "debug"} in c["environment"]
    assert c["jobRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/custom-job"
    assert c["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/custom-exec"
    assert d["tags"]["owner"] == "video"
    assert failures(verify(d)) == set()


def test_unrendered_account_fails() -> None:
    d = render()
    assert jobdef.placeholders(d) == ["${ACCOUNT_ID}"]
    assert {"rendered", "image in ECR", "job and execution roles"} <= failures(verify(d))


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        jobdef.set_path(d, path, value)

    return mutate


def _delete(*path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _env(name: str, value: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        d["containerProperties"]["environment"].append({"name": name, "value": value})

    return mutate


def _env_value(name: str, value: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        for entry in d["containerProperties"]["environment"]:
            if entry["name"] == name:
                entry["value"] = value

    return mutate


@pytest.mark.parametrize(
    ("mutation", "failing"),
    [
        (_set("retryStrategy.attempts", 2), "retryStrategy.attempts == 1"),
        (_set("retryStrategy.attempts", "1"), "retryStrategy.attempts == 1"),
        (_delete("retryStrategy"), "retryStrategy.attempts == 1"),
        (
            _set("retryStrategy.evaluateOnExit", [{"onExitCode": "5", "action": "RETRY"}]),
            "no evaluateOnExit RETRY rule",
        ),
        (_set("timeout.attemptDurationSeconds", 3600), "timeout 14400 s"),
        (_delete("timeout"), "timeout 14400 s"),
        (
            _set(
                "containerProperties.image",
                f"{ACCOUNT}.dkr.ecr.ap-northeast-2.amazonaws.com/academy-video-worker:amd64",
            ),
            "arm64 image",
        ),
        (_set("tags.architecture", "x86_64"), "arm64 image"),
        (_delete("tags", "architecture"), "arm64 image"),
        (_delete("containerProperties", "linuxParameters"), "initProcessEnabled"),
        (_set("containerProperties.linuxParameters.initProcessEnabled", False), "initProcessEnabled"),
        (_set("jobDefinitionName", "academy-video-jobdef"), "name"),
        (_set("platformCapabilities", ["FARGATE"]), "platform EC2"),
        (_set("containerProperties.command", ["transcode-worker", "Ref::job_id"]), "job id parameter"),
        (_set("containerProperties.command", ["Ref::video"]), "job id parameter"),
        (_set("parameters", {}), "job id parameter"),
        (_set("containerProperties.logConfiguration.options.awslogs-group", "/aws/batch/job"), "awslogs group"),
        (_set("containerProperties.resourceRequirements.0.value", "8"), "thread budget = vCPU"),
        (_set("containerProperties.resourceRequirements.1.value", "512"), "vCPU and memory"),
        (_env("JOB_API_TOKEN", "hunter2"), "no secrets in environment"),
        (_env("AWS_BATCH_JOB_ID", "x"), "no secrets in environment"),
        (_set("containerProperties.secrets.0.valueFrom", "plain-text-token"), "no secrets in environment"),
        (_env("R2_KEY", "AKIAIOSFODNN7EXAMPLE"), "no secrets in environment"),
        (_env("EXTRA", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "no secrets in environment"),
        (_env("SIGNING", "9f8Qx2LmT7vB4nR1cW6yZ3kJ0hD5sA8e"), "no secrets in environment"),
        (_env_value("JOB_API_URL", "https://worker:s3cret@app.example.com"), "job API URL"),
        (_env_value("JOB_API_URL", "https://app.example.com/?token=abc"), "job API URL"),
        (_set("containerProperties.runtimePlatform", {"cpuArchitecture": "X86_64"}), "arm64 image"),
        (_set("containerProperties.jobRoleArn", "academy-video-batch-job-role"), "job and execution roles"),
        (_set("tags.worker-exit-codes", "0=OK 1=FAIL"), "exit-code tags match worker/exit_codes.py"),
        (_set("tags.worker-retryable-exit-codes", "5"), "exit-code tags match worker/exit_codes.py"),
        (_set("containerProperties.image", "${ACCOUNT_ID}.dkr.ecr..."), "rendered"),
    ],
)
def test_each_mutation_fails_its_check(mutation: Mutation, failing: str) -> None:
    d = copy.deepcopy(rendered())
    mutation(d)
    failed = failures(verify(d))
    assert failing in failed
    if failing != "rendered":
        assert failed == {failing}


def _describe_response() -> dict[str, Any]:
    """What `aws batch describe-job-definitions --job-definition-name ...` returns (two revisions)."""
    good = rendered()
    good.update(
        jobDefinitionArn=f"arn:aws:batch:ap-northeast-2:{ACCOUNT}:job-definition/academy-video-batch-jobdef:7",
        revision=7,
        status="ACTIVE",
        containerOrchestrationType="ECS",
    )
    good["containerProperties"].update(volumes=[], mountPoints=[], ulimits=[])
    old = copy.deepcopy(good)
    old.update(revision=6, retryStrategy={"attempts": 3})
    old["jobDefinitionArn"] = old["jobDefinitionArn"][:-1] + "6"
    return {"jobDefinitions": [old, good]}


@pytest.mark.parametrize(
    "value",
    [
        "veryfast",
        "13800",
        "s3://academy-video-hls/hls/",
        "https://r2-account-id.r2.cloudflarestorage.com",
        "arn:aws:ssm:ap-northeast-2:123456789012:parameter/x",
        "academy-video-batch-queue",
        "ALLCAPS_SETTING_NAME_123",
    ],
)
def test_ordinary_settings_do_not_look_like_secrets(value: str) -> None:
    assert not looks_like_a_secret(value)


def test_a_failed_secret_check_names_no_value() -> None:
    d = copy.deepcopy(rendered())
    _env("SIGNING", "9f8Qx2LmT7vB4nR1cW6yZ3kJ0hD5sA8e")(d)
    _env_value("JOB_API_URL", "https://worker:s3cret@app.example.com")(d)
    text = "\n".join(c.line() for c in verify(d))
    assert "SIGNING" in text and "9f8Qx2" not in text and "s3cret" not in text


def test_describe_response_verifies_the_newest_active_revision() -> None:
    response = _describe_response()
    (chosen,) = select_definitions(response)
    assert chosen["revision"] == 7
    assert failures(verify(chosen)) == set()
    everything = select_definitions(response, every=True)
    assert [d["revision"] for d in everything] == [6, 7]
    assert failures(verify(everything[0])) == {"retryStrategy.attempts == 1"}


def test_inactive_revision_fails_status() -> None:
    d = _describe_response()["jobDefinitions"][1]
    d["status"] = "INACTIVE"
    assert failures(verify(d)) == {"status"}


def test_select_rejects_other_json() -> None:
    documents: list[Any] = [{"jobDefinitions": []}, {"foo": 1}, [], "x"]
    for document in documents:
        with pytest.raises(jobdef.NotAJobDefinitionError):
            select_definitions(document)


def test_cli_render_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "jobdef.json"
    assert jobdef.main(["render", "--account", ACCOUNT, "--vcpus", "2", "--memory", "3584", "-o", str(out)]) == 0
    assert jobdef.main(["verify", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "== academy-video-batch-jobdef"
    assert all(line.startswith("PASS ") for line in printed[1:-1])
    assert printed[-1] == "OK"


def test_cli_verify_reads_describe_output_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_describe_response())))
    assert jobdef.main(["verify", "-"]) == 0
    assert "== academy-video-batch-jobdef:7" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_describe_response())))
    assert jobdef.main(["verify", "--all", "-"]) == 1
    out = capsys.readouterr().out
    assert "FAIL retryStrategy.attempts == 1: attempts = 3" in out
    assert out.rstrip().endswith("FAILED")


def test_cli_set_mutation_fails_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "jobdef.json"
    assert jobdef.main(["render", "--account", ACCOUNT, "--set", "retryStrategy.attempts=2", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["retryStrategy"]["attempts"] == 2
    assert jobdef.main(["verify", str(out)]) == 1
    assert "FAIL retryStrategy.attempts == 1" in capsys.readouterr().out


def test_cli_verify_rejects_non_definitions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert jobdef.main(["verify", str(bad)]) == 2
    bad.write_text('{"hello": 1}')
    assert jobdef.main(["verify", str(bad)]) == 2


@pytest.mark.parametrize(
    ("manifest", "ok"),
    [
        (
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {"digest": "sha256:a", "platform": {"architecture": "arm64", "os": "linux"}},
                    {"digest": "sha256:b", "platform": {"architecture": "unknown", "os": "unknown"}},
                ],
            },
            True,
        ),
        (
            {
                "manifests": [
                    {"platform": {"architecture": "arm64", "os": "linux"}},
                    {"platform": {"architecture": "amd64", "os": "linux"}},
                ]
            },
            False,
        ),
        ({"architecture": "arm64", "os": "linux", "config": {}}, True),
        ({"architecture": "amd64", "os": "linux"}, False),
        ({"schemaVersion": 2, "config": {"digest": "sha256:c"}, "layers": []}, False),
    ],
)
def test_image_manifest_decides_the_architecture(manifest: dict[str, Any], ok: bool) -> None:
    assert check_architecture(rendered(), manifest).ok is ok


def test_arm64_in_the_image_name_suffices_without_tag() -> None:
    d = rendered(image=f"{ACCOUNT}.dkr.ecr.ap-northeast-2.amazonaws.com/academy-video-worker:2025-06-arm64")
    del d["tags"]["architecture"]
    assert check_architecture(d).ok


def test_exit_code_table_agrees_with_the_worker() -> None:
    table = jobdef.exit_code_table()
    assert table.split() == [f"{c.value}={c.name}" for c in ExitCode]
    assert jobdef.retryable_exit_codes().split() == [str(c.value) for c in sorted(RETRYABLE)]
    # Tag values: at most 256 characters of the allowed set.
    for value in (table, jobdef.retryable_exit_codes()):
        assert len(value) <= 256
        assert all(ch.isalnum() or ch in " _.:/=+-@" for ch in value)
    (codes, tags) = jobdef.check_exit_codes(rendered())
    assert codes.ok and tags.ok


def test_template_is_json_with_known_placeholders() -> None:
    document = json.loads(TEMPLATE.read_text())
    known = {
        "${ACCOUNT_ID}",
        "${REGION}",
        "${VCPUS}",
        "${MEMORY_MIB}",
        "${JOB_ROLE}",
        "${EXECUTION_ROLE}",
        "${API_URL}",
        "${HLS_OUTPUT_URI}",
        "${R2_ENDPOINT}",
        "${EXIT_CODES}",
        "${RETRYABLE_EXIT_CODES}",
    }
    assert set(jobdef.placeholders(document)) == known


# --- Dockerfile checks --------------------------------------------------------------------------------------------

DOCKERFILE_TEXT = DOCKERFILE.read_text()
DOCKERIGNORE_TEXT = DOCKERFILE.with_name("Dockerfile.dockerignore").read_text()


def docker_checks(text: str, *, job: dict[str, Any] | None = None) -> list[Check]:
    return check_dockerfile(text, jobdef=rendered() if job is None else job, dockerignore=DOCKERIGNORE_TEXT)


def test_real_dockerfile_passes() -> None:
    checks = docker_checks(DOCKERFILE_TEXT)
    assert failures(checks) == set()
    assert len(checks) == 14


def test_dockercheck_cli_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert dockercheck.main([]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK")
    assert "FAIL" not in out


def _final_from() -> str:
    return "FROM --platform=linux/arm64 python:3.12-slim-bookworm\n"


def _in_final(line: str) -> str:
    """Insert ``line`` right after the final stage's FROM."""
    return DOCKERFILE_TEXT.replace(_final_from(), _final_from() + line + "\n")


@pytest.mark.parametrize(
    ("text", "failing"),
    [
        (
            DOCKERFILE_TEXT.replace("python:3.12-slim-bookworm", "python:3.12-alpine3.20"),
            "glibc Debian/Ubuntu slim base",
        ),
        (DOCKERFILE_TEXT.replace("python:3.12-slim-bookworm", "python:3.12-bookworm"), "glibc Debian/Ubuntu slim base"),
        (DOCKERFILE_TEXT.replace("python:3.12-slim-bookworm", "python:3.12-slim"), "glibc Debian/Ubuntu slim base"),
        (DOCKERFILE_TEXT.replace("3.12-slim-bookworm", "3.11-slim-bookworm"), "Python >= 3.12"),
        (
            DOCKERFILE_TEXT.replace("python:3.12-slim-bookworm AS build", "python:3.13-slim-bookworm AS build"),
            "build stage Python = final Python",
        ),
        (DOCKERFILE_TEXT.replace("USER 10001:10001\n", ""), "non-root USER"),
        (DOCKERFILE_TEXT.replace("USER 10001:10001", "USER root"), "non-root USER"),
        (DOCKERFILE_TEXT.replace("USER 10001:10001", "USER app"), "non-root USER"),
        (
            _in_final("RUN apt-get update && apt-get install -y --no-install-recommends build-essential"),
            "no build toolchain in the final stage",
        ),
        (_in_final("RUN apt-get install -y libx264-dev"), "no build toolchain in the final stage"),
        (_in_final("COPY . /src"), "no build toolchain in the final stage"),
        (_in_final("RUN pip install setuptools wheel"), "no build toolchain in the final stage"),
        (
            DOCKERFILE_TEXT.replace(
                "FROM --platform=linux/arm64 python:3.12-slim-bookworm\n", "FROM python:3.12-slim-bookworm\n"
            ),
            "--platform=linux/arm64",
        ),
        (
            DOCKERFILE_TEXT.replace(
                "--platform=linux/arm64 python:3.12-slim-bookworm AS",
                "--platform=linux/amd64 python:3.12-slim-bookworm AS",
            ),
            "--platform=linux/arm64",
        ),
        (
            DOCKERFILE_TEXT.replace('ENTRYPOINT ["transcode-worker"]', "ENTRYPOINT transcode-worker"),
            "exec-form ENTRYPOINT runs transcode-worker",
        ),
        (
            DOCKERFILE_TEXT.replace('ENTRYPOINT ["transcode-worker"]', 'ENTRYPOINT ["transcode"]'),
            "exec-form ENTRYPOINT runs transcode-worker",
        ),
        (
            DOCKERFILE_TEXT.replace(
                'ENTRYPOINT ["transcode-worker"]', 'ENTRYPOINT ["/usr/bin/tini", "--", "transcode-worker"]'
            ),
            "one init process",
        ),
        (_in_final("ENV JOB_API_TOKEN=abc"), "no credentials in ENV/ARG"),
        (
            DOCKERFILE_TEXT.replace("--no-index --find-links=/wheels hls-transcoder", "hls-transcoder"),
            "final stage installs wheels only",
        ),
        (
            DOCKERFILE_TEXT.replace("RUN pip wheel --only-binary=:all: --wheel-dir /wheels .", "RUN true"),
            "wheel built from this repository",
        ),
    ],
)
def test_each_dockerfile_mutation_fails_its_check(text: str, failing: str) -> None:
    assert text != DOCKERFILE_TEXT
    failed = failures(docker_checks(text))
    assert failing in failed, failed


def test_single_stage_dockerfile_fails() -> None:
    text = "FROM --platform=linux/arm64 python:3.12-slim-bookworm\nCOPY . .\nRUN pip install .\nUSER 1000\n"
    failed = failures(docker_checks(text))
    assert {
        "multi-stage",
        "wheel built from this repository",
        "final stage installs wheels only",
        "no build toolchain in the final stage",
        "exec-form ENTRYPOINT runs transcode-worker",
    } <= failed


def test_tini_in_the_image_is_fine_without_init_process_enabled() -> None:
    text = DOCKERFILE_TEXT.replace(
        'ENTRYPOINT ["transcode-worker"]', 'ENTRYPOINT ["/usr/bin/tini", "--", "transcode-worker"]'
    )
    job = rendered()
    del job["containerProperties"]["linuxParameters"]
    assert "one init process" not in failures(docker_checks(text, job=job))
    assert "one init process" in failures(docker_checks(DOCKERFILE_TEXT, job=job))


def test_job_command_repeating_the_entrypoint_fails() -> None:
    job = rendered()
    job["containerProperties"]["command"] = ["transcode-worker", "Ref::job_id"]
    assert failures(docker_checks(DOCKERFILE_TEXT, job=job)) == {"job command appends to ENTRYPOINT"}


def test_dockerignore_must_exclude_git_and_venv() -> None:
    checks = check_dockerfile(DOCKERFILE_TEXT, jobdef=rendered(), dockerignore="out\n")
    assert failures(checks) == {"build context filter"}


def test_parser_handles_continuations_comments_heredocs_and_escape() -> None:
    text = "\n".join(
        [
            "# syntax=docker/dockerfile:1",
            "# escape=`",
            "ARG X=1",
            "FROM --platform=linux/arm64 python:3.12-slim-bookworm AS build",
            "RUN echo one `",
            "  # a comment inside the continuation",
            "  two `",
            "",
            "  three",
            "COPY <<EOF /etc/motd",
            "hello",
            "RUN not an instruction",
            "EOF",
            "from --platform=linux/arm64 build",
            'ENTRYPOINT [ "a", "b" ]',
            "CMD c d",
        ]
    )
    stages = parse_dockerfile(text)
    assert [(s.name, s.base, s.platform) for s in stages] == [
        ("build", "python:3.12-slim-bookworm", "linux/arm64"),
        (None, "build", "linux/arm64"),
    ]
    build = stages[0].instructions
    assert [i.keyword for i in build] == ["RUN", "COPY"]
    assert build[0].args == "echo one two three"
    assert build[0].line == 5
    assert "RUN not an instruction" in build[1].args
    final = stages[1].instructions
    assert final[0].exec_form() == ["a", "b"]
    assert final[1].exec_form() is None


@pytest.mark.parametrize(
    ("reference", "python", "glibc"),
    [
        ("python:3.12-slim-bookworm", (3, 12), (2, 36)),
        ("docker.io/library/python:3.13.1-slim-trixie@sha256:abc", (3, 13), (2, 41)),
        ("public.ecr.aws/docker/library/python:3.12-slim-bookworm", (3, 12), (2, 36)),
        ("debian:bookworm-slim", (3, 11), (2, 36)),
        ("ubuntu:24.04", (3, 12), (2, 39)),
        ("python:3.12-slim", (3, 12), None),
        ("registry:5000/team/python", None, None),
    ],
)
def test_image_python_and_glibc(reference: str, python: tuple[int, int] | None, glibc: tuple[int, int] | None) -> None:
    image = parse_image(reference)
    assert image_python(image) == python
    assert image_glibc(image) == glibc


def test_parse_image_keeps_registry_ports() -> None:
    image = parse_image("registry:5000/team/python")
    assert (image.repository, image.tag, image.name) == ("registry:5000/team/python", "latest", "python")


# --- wheels -------------------------------------------------------------------------------------------------------


def test_runtime_requirements_come_from_setup_cfg() -> None:
    requirements = runtime_requirements(SETUP_CFG)
    assert requirements
    assert any(r.replace(" ", "").startswith("av>=") for r in requirements)
    assert not any(r.startswith("#") for r in requirements)


def test_manylinux_platforms_cover_the_image_glibc() -> None:
    tags = manylinux_platforms((2, 36))
    assert "manylinux2014_aarch64" in tags
    assert "manylinux_2_28_aarch64" in tags  # PyAV's aarch64 wheels
    assert "manylinux_2_36_aarch64" in tags
    assert "manylinux_2_37_aarch64" not in tags


def test_wheel_file_check() -> None:
    checks = check_wheel_files(
        [
            "av-18.1.0-cp311-abi3-manylinux_2_28_aarch64.whl",
            "numpy-2.5.5-cp312-cp312-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
            "boto3-1.40.0-py3-none-any.whl",
            "psutil-7.0.0-cp36-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
            "thing-1.0-cp312-cp312-manylinux_2_28_x86_64.whl",
            "newer-1.0-cp312-cp312-manylinux_2_39_aarch64.whl",
            "alpine-1.0-cp312-cp312-musllinux_1_2_aarch64.whl",
            "sdist-1.0.tar.gz",
        ],
        glibc=(2, 36),
    )
    assert {c.name.split()[1]: c.ok for c in checks} == {
        "av": True,
        "numpy": True,
        "boto3": True,
        "psutil": True,
        "thing": False,
        "newer": False,
        "alpine": False,
        "sdist-1.0.tar.gz": False,
    }


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI is not reachable")
def test_runtime_dependencies_resolve_to_aarch64_wheels(tmp_path: Path) -> None:
    final = parse_image(parse_dockerfile(DOCKERFILE_TEXT)[-1].base)
    python, glibc = image_python(final), image_glibc(final)
    assert python == (3, 12) and glibc is not None
    checks = check_wheels(runtime_requirements(SETUP_CFG), python=python, glibc=glibc, timeout_s=120, dest=tmp_path)
    assert failures(checks) == set(), [c.line() for c in checks if not c.ok]
    names = {c.name.split()[1] for c in checks[1:]}
    assert {"av", "numpy"} <= names


def _build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of the source tree (the checkout stays clean)."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "out", "sample", "__pycache__", ".*cache"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_ships_the_worker_and_nothing_else(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(wheel.read(entry_points).decode())
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    # No benchmarks, no reference job API, no deploy tooling in the image.
    assert packages == {"transcoder", "worker", "api_client"}
    assert "api_client/openapi.json" in names  # the client reads its reason codes from the contract
    assert not any("reference" in n or "store.py" in n for n in names)
    # Every console script points at a module the wheel contains.
    for name, target in scripts["console_scripts"].items():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, name
    assert set(scripts["console_scripts"]) == {"transcode", "transcode-worker"}
