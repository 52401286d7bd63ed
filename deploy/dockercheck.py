"""Check docker/arm64/Dockerfile without a Docker engine.

``python -m deploy.dockercheck`` parses the Dockerfile (a line parser: parser
directives, comments, continuation lines, heredocs, exec/shell forms) and
checks the image's invariants, one PASS/FAIL line each:

- a build stage and a final stage, every one ``--platform=linux/arm64``;
- glibc bases (Debian slim or Ubuntu, release pinned; never Alpine/musl:
  PyAV's musllinux wheel builds x264 without its assembly);
- Python >= 3.12 in the final stage, the same Python in the build stage;
- the package built as a wheel from this repository in the build stage and
  installed in the final stage from wheels only (``--no-index``);
- no build toolchain in the final stage (no compilers or -dev packages, no
  source tree, no ``pip wheel``/build tools);
- a non-root USER; an exec-form ENTRYPOINT running ``transcode-worker``;
- exactly one init: tini in the ENTRYPOINT, or ``initProcessEnabled`` in the
  job definition template (this repository picks the latter);
- the job definition's command does not repeat the ENTRYPOINT;
- no credentials in ENV/ARG; a ``Dockerfile.dockerignore`` keeping .git and
  .venv out of the build context.

``--wheels`` also resolves every runtime dependency (setup.cfg
``install_requires``) for the image with ``pip download --only-binary=:all:``
for aarch64 and the final stage's Python, and checks each file is a manylinux
aarch64 (or pure ``any``) wheel. The platform tags come from the base image's
glibc: ``manylinux2014_aarch64`` alone is not enough, because PyAV's aarch64
wheels are ``manylinux_2_28`` (Debian bookworm has glibc 2.36).
"""

from __future__ import annotations

import argparse
import configparser
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import DOCKERFILE, SETUP_CFG
from .jobdef import ENTRYPOINT, Check, render

ARCH_PLATFORM = "linux/arm64"
MIN_PYTHON = (3, 12)
# Python 3 and glibc of the distribution releases a base may be built on.
DEBIAN_RELEASES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    # codename: (python3 from apt, glibc)
    "bullseye": ((3, 9), (2, 31)),
    "bookworm": ((3, 11), (2, 36)),
    "trixie": ((3, 13), (2, 41)),
    "focal": ((3, 8), (2, 31)),
    "20.04": ((3, 8), (2, 31)),
    "jammy": ((3, 10), (2, 35)),
    "22.04": ((3, 10), (2, 35)),
    "noble": ((3, 12), (2, 39)),
    "24.04": ((3, 12), (2, 39)),
}
_TOOLCHAIN = re.compile(
    r"^(gcc|g\+\+|cpp|clang|llvm|make|cmake|ninja-build|build-essential|binutils|autoconf|automake|libtool|"
    r"pkg-config|pkgconf|nasm|yasm|git|cargo|rustc|gfortran|python3-dev|python3-pip|.*-dev)(:.*|=.*)?$"
)
_BUILD_TOOLS = re.compile(r"^(setuptools|wheel|build|cython|maturin|scikit-build.*|meson.*|pybind11)([<>=!~\[].*)?$")
_CREDENTIAL = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|ACCESS_KEY|CREDENTIAL|API_KEY", re.IGNORECASE)
_HEREDOC = re.compile(r"<<(-?)[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")


# --- parsing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: continuation lines joined, comment lines dropped."""

    line: int  # 1-based line of the instruction's first line
    keyword: str  # upper case
    args: str

    def split_flags(self) -> tuple[dict[str, str], str]:
        """Leading ``--flag=value`` options and the rest (``--mount`` may repeat: joined with ';')."""
        flags: dict[str, str] = {}
        rest = self.args.strip()
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags[name] = f"{flags[name]};{value}" if name in flags else value
            rest = rest.strip()
        return flags, rest

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's arguments, or None for the shell form."""
        _, rest = self.split_flags()
        if not rest.startswith("["):
            return None
        try:
            value = json.loads(rest)
        except json.JSONDecodeError:
            return None
        return [str(v) for v in value] if isinstance(value, list) else None


@dataclass(slots=True)
class Stage:
    """A build stage: its FROM and the instructions after it."""

    index: int
    line: int
    base: str
    name: str | None
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile (instructions before the first FROM, i.e. global ARGs, are dropped)."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    # Parser directives: "# name=value" lines at the very top.
    while start < len(lines):
        match = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", lines[start])
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
        start += 1
    instructions: list[Instruction] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        if not raw.strip() or raw.lstrip().startswith("#"):
            i += 1
            continue
        first = i
        parts: list[str] = []
        current = raw
        while True:
            stripped = current.rstrip()
            if stripped.endswith(escape):
                parts.append(stripped[: -len(escape)])
                i += 1
                # Comment lines and empty lines inside a continuation are skipped.
                while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                current = lines[i]
                continue
            parts.append(current)
            i += 1
            break
        joined = " ".join(p.strip() for p in parts if p.strip())
        keyword, _, args = joined.partition(" ")
        for heredoc in _HEREDOC.finditer(args):
            strip_tabs, word = heredoc.group(1) == "-", heredoc.group(2)
            body: list[str] = []
            while i < len(lines):
                candidate = lines[i].lstrip("\t") if strip_tabs else lines[i]
                i += 1
                if candidate.strip() == word:
                    break
                body.append(candidate)
            args += "\n" + "\n".join(body)
        instructions.append(Instruction(first + 1, keyword.upper(), args.strip()))
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            flags, rest = instruction.split_flags()
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(
                Stage(
                    index=len(stages),
                    line=instruction.line,
                    base=words[0] if words else "",
                    name=name,
                    platform=flags.get("platform"),
                )
            )
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


@dataclass(frozen=True, slots=True)
class ImageRef:
    repository: str  # e.g. "python", "docker.io/library/python"
    tag: str
    digest: str

    @property
    def name(self) -> str:
        """The last path component: "python", "debian", "ubuntu", "alpine", ..."""
        return self.repository.rsplit("/", 1)[-1].lower()


def parse_image(reference: str) -> ImageRef:
    reference, _, digest = reference.partition("@")
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return ImageRef(reference[:colon], reference[colon + 1 :], digest)
    return ImageRef(reference, "latest", digest)


def _release(image: ImageRef) -> str | None:
    """The Debian/Ubuntu release an image is pinned to, if its tag says."""
    if image.name == "ubuntu":
        return image.tag if image.tag in DEBIAN_RELEASES else None
    for word in re.split(r"[-_.]", image.tag):
        if word in DEBIAN_RELEASES:
            return word
    return None


def image_python(image: ImageRef) -> tuple[int, int] | None:
    """The Python an image runs: the python image's tag, or the release's python3 for debian/ubuntu."""
    if image.name == "python":
        match = re.match(r"^(\d+)\.(\d+)", image.tag)
        return (int(match.group(1)), int(match.group(2))) if match else None
    release = _release(image)
    if image.name in {"debian", "ubuntu"} and release is not None:
        return DEBIAN_RELEASES[release][0]
    return None


def image_glibc(image: ImageRef) -> tuple[int, int] | None:
    release = _release(image)
    return DEBIAN_RELEASES[release][1] if release is not None else None


# --- checks -------------------------------------------------------------------------------------------------------


def _external(stages: Sequence[Stage], stage: Stage) -> bool:
    """Whether ``stage`` starts from an image rather than from an earlier stage."""
    earlier = {s.name for s in stages[: stage.index] if s.name}
    return stage.base not in earlier and stage.base.lower() != "scratch"


def _base_check(stage: Stage) -> tuple[bool, str]:
    image = parse_image(stage.base)
    where = f"stage {stage.index} {stage.base!r}"
    lowered = stage.base.lower()
    if "alpine" in lowered or "musl" in lowered:
        return False, f"{where} is musl (Alpine): PyAV's musllinux wheel has no x264 assembly"
    if image.name not in {"python", "debian", "ubuntu"}:
        return False, f"{where} is not a python/debian/ubuntu image"
    if image.name in {"python", "debian"} and "slim" not in image.tag:
        return False, f"{where} is not a slim variant"
    if _release(image) is None:
        return False, f"{where} does not pin a Debian/Ubuntu release (e.g. -slim-bookworm)"
    return True, f"{where} (glibc {'.'.join(map(str, image_glibc(image) or ()))})"


def _runs(stage: Stage) -> list[str]:
    return [i.args for i in stage.all("RUN")]


def _context_copies(stage: Stage) -> list[Instruction]:
    """COPY/ADD from the build context (no --from)."""
    return [i for i in stage.instructions if i.keyword in {"COPY", "ADD"} and "from" not in i.split_flags()[0]]


def _installed_packages(command: str) -> list[str]:
    """Packages named by apt-get/apt/apk install commands in a RUN."""
    found: list[str] = []
    for segment in re.split(r"&&|;|\|\||\n", command):
        try:
            words = shlex.split(segment)
        except ValueError:
            words = segment.split()
        for i, word in enumerate(words):
            if word in {"apt-get", "apt", "apk"} and any(w in {"install", "add"} for w in words[i + 1 :]):
                verb = next(j for j in range(i + 1, len(words)) if words[j] in {"install", "add"})
                found.extend(w for w in words[verb + 1 :] if not w.startswith("-"))
                break
    return found


def _pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in a RUN."""
    out = []
    for segment in re.split(r"&&|;|\|\||\n", command):
        try:
            words = shlex.split(segment)
        except ValueError:
            words = segment.split()
        for i, word in enumerate(words):
            if re.fullmatch(r"pip3?(\.\d+)?", word.rsplit("/", 1)[-1]) and words[i + 1 : i + 2] == ["install"]:
                out.append(words[i + 2 :])
    return out


def check_dockerfile(
    text: str,
    *,
    jobdef: dict[str, Any] | None = None,
    dockerignore: str | None = None,
) -> list[Check]:
    """Every invariant of the Dockerfile ``text`` (module docstring), in a fixed order.

    ``jobdef`` is the rendered job definition (init process and command
    cross-checks); ``dockerignore`` the text of ``Dockerfile.dockerignore``
    (None skips that check).
    """
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    stages = parse_dockerfile(text)
    if not stages:
        return [Check("stages", False, "no FROM instruction")]
    final = stages[-1]
    builders = stages[:-1]
    check(
        "multi-stage",
        len(stages) >= 2,
        f"{len(stages)} stage(s): " + ", ".join(f"{s.name or s.index} ({s.base})" for s in stages),
    )
    wrong = [f"stage {s.index} line {s.line}: {s.platform!r}" for s in stages if s.platform != ARCH_PLATFORM]
    check(f"--platform={ARCH_PLATFORM}", not wrong, "; ".join(wrong) or f"all {len(stages)} stage(s)")

    bases = [_base_check(s) for s in stages if _external(stages, s)]
    check("glibc Debian/Ubuntu slim base", all(ok for ok, _ in bases), "; ".join(d for _, d in bases))

    def python_of(stage: Stage) -> tuple[int, int] | None:
        seen: set[str] = set()
        while not _external(stages, stage) and stage.base not in seen:
            seen.add(stage.base)
            stage = next(s for s in stages if s.name == stage.base)
        return image_python(parse_image(stage.base))

    final_python = python_of(final)
    shown = ".".join(map(str, final_python)) if final_python else "unknown"
    check(f"Python >= {'.'.join(map(str, MIN_PYTHON))}", final_python is not None and final_python >= MIN_PYTHON, shown)
    builder_pythons = {python_of(s) for s in builders}
    check(
        "build stage Python = final Python",
        bool(builders) and builder_pythons == {final_python},
        f"build {sorted('.'.join(map(str, p)) if p else 'unknown' for p in builder_pythons)}, final {shown}",
    )

    wheel_stages = [
        s
        for s in builders
        if _context_copies(s) and any(re.search(r"\bpip3?\s+wheel\b|\s-m\s+build\b", r) for r in _runs(s))
    ]
    check(
        "wheel built from this repository",
        bool(wheel_stages),
        f"stage {wheel_stages[0].name or wheel_stages[0].index} copies the context and builds wheels"
        if wheel_stages
        else "no build stage both copies the source and runs `pip wheel`",
    )

    stage_names = {s.name for s in builders if s.name} | {str(s.index) for s in builders}
    from_builder = [
        i
        for i in final.instructions
        if (i.keyword == "COPY" and i.split_flags()[0].get("from") in stage_names)
        or (
            i.keyword == "RUN"
            and re.search(r"--mount=\S*from=(" + "|".join(map(re.escape, stage_names)) + r")\b", i.args)
        )
    ]
    wheel_installs = [
        args
        for run in _runs(final)
        for args in _pip_installs(run)
        if "--no-index" in args and any(a.startswith(("--find-links", "-f")) for a in args)
    ]
    check(
        "final stage installs wheels only",
        bool(from_builder) and bool(wheel_installs),
        (f"pip install {' '.join(wheel_installs[0])}" if wheel_installs else "no `pip install --no-index --find-links`")
        + ("; wheels from the build stage" if from_builder else "; nothing taken from a build stage"),
    )

    problems: list[str] = []
    for run in _runs(final):
        tools = [p for p in _installed_packages(run) if _TOOLCHAIN.match(p)]
        if tools:
            problems.append(f"installs {tools}")
        if re.search(r"\bpip3?\s+wheel\b|\s-m\s+build\b", run):
            problems.append("builds wheels")
        for args in _pip_installs(run):
            targets = [a for a in args if not a.startswith("-")]
            local = [a for a in targets if a in {".", ".."} or a.startswith(("./", "/src"))]
            build_tools = [a for a in targets if _BUILD_TOOLS.match(a)]
            if local:
                problems.append(f"pip installs a source tree {local}")
            if build_tools:
                problems.append(f"pip installs build tools {build_tools}")
    copies = _context_copies(final)
    if copies:
        problems.append("copies the build context: " + "; ".join(f"line {i.line} {i.keyword} {i.args}" for i in copies))
    check("no build toolchain in the final stage", not problems, "; ".join(problems) or "none")

    users = final.all("USER")
    user = users[-1].args.split(":")[0].strip() if users else None
    created = (
        any(re.search(r"\b(useradd|adduser)\b.*\b" + re.escape(user) + r"\b", r) for r in _runs(final))
        if user
        else False
    )
    non_root = user is not None and user not in {"root", "0"} and (user.isdigit() or created)
    check(
        "non-root USER",
        non_root,
        f"USER {users[-1].args}" + ("" if user is None or user.isdigit() or created else " (never created)")
        if users
        else "no USER: the worker would run as root",
    )

    entrypoints = final.all("ENTRYPOINT")
    argv = entrypoints[-1].exec_form() if entrypoints else None
    program_args = list(argv or [])
    tini = bool(program_args) and program_args[0].rsplit("/", 1)[-1] in {"tini", "tini-static", "dumb-init"}
    if tini:
        program_args = program_args[1:]
        if program_args[:1] == ["--"]:
            program_args = program_args[1:]
    program = program_args[0].rsplit("/", 1)[-1] if program_args else None
    check(
        f"exec-form ENTRYPOINT runs {ENTRYPOINT}",
        argv is not None and program == ENTRYPOINT,
        f"ENTRYPOINT {entrypoints[-1].args}" + ("" if argv is not None else " (shell form: /bin/sh would get SIGTERM)")
        if entrypoints
        else "no ENTRYPOINT",
    )

    container = (jobdef or {}).get("containerProperties") or {}
    init_enabled = ((container.get("linuxParameters") or {}).get("initProcessEnabled")) is True
    if jobdef is None:
        check("one init process", tini, "tini in ENTRYPOINT" if tini else "no tini, and no job definition to check")
    else:
        check(
            "one init process",
            tini != init_enabled,
            "both tini and initProcessEnabled: two inits"
            if tini and init_enabled
            else "tini in the ENTRYPOINT"
            if tini
            else "job definition initProcessEnabled (Docker's --init, tini); none in the image"
            if init_enabled
            else "neither tini nor initProcessEnabled: Python would be PID 1",
        )
        command = container.get("command") or []
        check(
            "job command appends to ENTRYPOINT",
            bool(command) and command[0] != program and command[0] != ENTRYPOINT,
            f"container runs {[*(argv or []), *command]}",
        )

    leaks: list[str] = []
    for stage in stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", instruction.args)
            leaks.extend(f"line {instruction.line} {n}" for n in names if _CREDENTIAL.search(n))
    check("no credentials in ENV/ARG", not leaks, "; ".join(leaks) or "none")

    if dockerignore is not None:
        patterns = {line.strip().strip("/") for line in dockerignore.splitlines() if line.strip()}
        missing = [p for p in (".git", ".venv") if p not in patterns]
        check(
            "build context filter",
            not missing,
            f"Dockerfile.dockerignore lacks {missing}" if missing else "Dockerfile.dockerignore excludes .git, .venv",
        )
    return checks


# --- wheels -------------------------------------------------------------------------------------------------------


def runtime_requirements(setup_cfg: Path = SETUP_CFG) -> list[str]:
    """``[options] install_requires`` of setup.cfg, one requirement per entry (comments dropped)."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), inline_comment_prefixes=None)
    parser.read_string(setup_cfg.read_text())
    text = parser.get("options", "install_requires", fallback="")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def manylinux_platforms(glibc: tuple[int, int], arch: str = "aarch64") -> list[str]:
    """pip ``--platform`` tags a glibc of this version runs: pip does not expand them itself."""
    major, minor = glibc
    tags = [f"manylinux2014_{arch}"]
    tags += [f"manylinux_{major}_{m}_{arch}" for m in range(17, minor + 1)]
    return tags


def pip_download_command(
    requirements: Sequence[str], *, python: tuple[int, int], glibc: tuple[int, int], dest: Path
) -> list[str]:
    version = f"{python[0]}.{python[1]}"
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
    for platform in manylinux_platforms(glibc):
        command += ["--platform", platform]
    command += ["--python-version", version, "--implementation", "cp", "--abi", f"cp{python[0]}{python[1]}"]
    command += ["-d", str(dest), *requirements]
    return command


_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def check_wheel_files(names: Sequence[str], *, glibc: tuple[int, int], arch: str = "aarch64") -> list[Check]:
    """One check per downloaded file: a pure wheel, or a manylinux wheel for ``arch`` within ``glibc``."""
    checks = []
    for name in sorted(names):
        match = _WHEEL.match(name)
        if match is None:
            checks.append(Check(f"wheel {name}", False, "not a wheel (a source distribution would need a compiler)"))
            continue
        platforms = match.group("plat").split(".")
        good = []
        for tag in platforms:
            perennial = re.fullmatch(rf"manylinux_(\d+)_(\d+)_{arch}", tag)
            if tag in {"any", f"manylinux2014_{arch}"} or (
                perennial is not None and (int(perennial.group(1)), int(perennial.group(2))) <= glibc
            ):
                good.append(tag)
        checks.append(
            Check(
                f"wheel {match.group('name')} {match.group('version')}",
                bool(good),
                f"{match.group('py')}-{match.group('abi')}-{match.group('plat')}"
                + ("" if good else f" (no manylinux {arch} tag within glibc {glibc[0]}.{glibc[1]})"),
            )
        )
    return checks


def check_wheels(
    requirements: Sequence[str],
    *,
    python: tuple[int, int],
    glibc: tuple[int, int],
    timeout_s: float = 300.0,
    dest: Path | None = None,
) -> list[Check]:
    """Resolve ``requirements`` for linux/aarch64 (binary wheels only) and check every file."""
    with tempfile.TemporaryDirectory(prefix="aarch64-wheels-") as tmp:
        target = dest or Path(tmp)
        target.mkdir(parents=True, exist_ok=True)
        command = pip_download_command(requirements, python=python, glibc=glibc, dest=target)
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return [Check("pip download", False, f"timed out after {timeout_s:g} s")]
        target_text = f"cp{python[0]}{python[1]} linux/aarch64, glibc {glibc[0]}.{glibc[1]}"
        summary = f"{len(requirements)} requirement(s) for {target_text}"
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            return [Check("pip download", False, f"{summary}: exit {result.returncode}: {tail}")]
        names = [p.name for p in target.iterdir() if p.is_file()]
        downloaded = Check("pip download", True, f"{summary}: {len(names)} file(s)")
        return [downloaded, *check_wheel_files(names, glibc=glibc)]


# --- command line -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.dockercheck", description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument("--wheels", action="store_true", help="also resolve the runtime dependencies for aarch64")
    parser.add_argument("--setup-cfg", type=Path, default=SETUP_CFG)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for pip download")
    parser.add_argument("--keep", type=Path, help="download the wheels here (and keep them)")
    args = parser.parse_args(argv)
    try:
        text = args.dockerfile.read_text()
    except OSError as exc:
        print(f"dockercheck: error: {exc}", file=sys.stderr)
        return 2
    ignore_path = args.dockerfile.with_name(args.dockerfile.name + ".dockerignore")
    dockerignore = ignore_path.read_text() if ignore_path.exists() else ""
    checks = check_dockerfile(text, jobdef=render(), dockerignore=dockerignore)
    if args.wheels:
        final = parse_image(parse_dockerfile(text)[-1].base) if parse_dockerfile(text) else None
        python = image_python(final) if final else None
        glibc = image_glibc(final) if final else None
        if python is None or glibc is None:
            checks.append(Check("pip download", False, "cannot tell the final image's Python and glibc"))
        else:
            requirements = runtime_requirements(args.setup_cfg)
            checks += check_wheels(requirements, python=python, glibc=glibc, timeout_s=args.timeout, dest=args.keep)
    for result in checks:
        print(result.line())
    failed = any(not c.ok for c in checks)
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


__all__ = [
    "Instruction",
    "Stage",
    "check_dockerfile",
    "check_wheel_files",
    "check_wheels",
    "image_glibc",
    "image_python",
    "main",
    "manylinux_platforms",
    "parse_dockerfile",
    "parse_image",
    "pip_download_command",
    "runtime_requirements",
]

if __name__ == "__main__":
    sys.exit(main())
