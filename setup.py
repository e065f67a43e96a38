"""Packaging glue: the five top-level folders install under one import name, `rlguard`.

The folders stay where the user put them (`ppo/`, `monitors/`, ...), but a training
environment that installs rlguard gets only `rlguard.ppo`, `rlguard.monitors`, ...:
generic top-level names such as `monitors` or `policies` would collide with (or silently
replace) the user's own. Everything else (metadata, dependencies, data files) lives in
pyproject.toml; setuptools cannot express a prefixed folder mapping there without
listing every sub-package by hand, so they are listed here by walking the folders.
"""

import os

from setuptools import setup

FOLDERS = ("ppo", "monitors", "policies", "orchestrator", "dashboards")


def sub_packages(folder: str) -> list[str]:
    """Every directory under `folder` as a package name (data-only directories included,
    so that their files travel as package data)."""
    names = []
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        names.append("rlguard." + dirpath.replace(os.sep, "."))
    return names


setup(
    package_dir={f"rlguard.{folder}": folder for folder in FOLDERS},
    packages=[name for folder in FOLDERS for name in sub_packages(folder)],
)
