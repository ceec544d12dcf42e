"""Isolated package directories for the benchmarks, built once with pip and kept in ``bench/.cache``.

Cold starts run against what a Lambda would have (the layer's requirements plus the runtime's boto3, or the naive
handler's ``openai`` + boto3), not against the development venv and its extras (aws-sam-cli brings awscrt and
pyOpenSSL, which botocore imports when present). Package sizes are measured on the Lambda platform's wheels.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache"
LAMBDA_PLATFORM = ("--platform", "manylinux2014_aarch64", "--implementation", "cp", "--python-version", "3.12", "--only-binary=:all:")


def layer_requirements() -> list[str]:
    """The layer's requirement lines (layers/common/requirements.txt), without comments, pinned by the lock the layer
    is built with (``-c layers/common/constraints.txt``): the benchmarks run the versions that ship."""
    lines = (REPO_ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    return [*requirements, "-c", str(REPO_ROOT / "layers" / "common" / "constraints.txt")]


def pip_target(
    name: str,
    python: str,
    requirements: Sequence[str],
    *,
    platform: Sequence[str] = (),
    compile_: bool = True,
    drop: Sequence[str] = (),
) -> Path:
    """``pip install --target bench/.cache/<name>``, reused while the requirements (and interpreter) stay the same.
    ``drop`` names top-level packages removed afterwards (with their dist-info), as the layer build does."""
    target = CACHE / name
    stamp = target / ".bench-stamp"
    files = [Path(arg).read_text() for arg in requirements if Path(arg).is_file()]  # a constraints file's pins count too
    key = hashlib.sha256("\n".join([python, *requirements, *files, *platform, str(compile_), *drop]).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == key:
        return target
    shutil.rmtree(target, ignore_errors=True)
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target), *platform]
    if not compile_:
        command.append("--no-compile")
    done = subprocess.run([*command, *requirements], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pip install into {target} failed:\n{done.stderr[-3000:]}")
    for package in drop:
        shutil.rmtree(target / package, ignore_errors=True)
        for info in target.glob(f"{package}-*.dist-info"):
            shutil.rmtree(info)
    shutil.rmtree(target / "bin", ignore_errors=True)
    stamp.write_text(key)
    return target


def copy_tree(source: Path, destination: Path, *, keep_bytecode: bool) -> Path:
    """Copy ``source`` to ``destination`` (replacing it), with or without ``__pycache__`` directories."""
    shutil.rmtree(destination, ignore_errors=True)
    ignore = None if keep_bytecode else shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source, destination, ignore=ignore, symlinks=True)
    return destination


def compile_tree(python: str, *paths: Path) -> None:
    """Byte-compile for ``python`` (what a layer built with its runtime's Python would ship)."""
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``: the unzipped size Lambda's 250 MB limit counts."""
    total = files = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            total += item.stat().st_size
            files += 1
    return total, files
