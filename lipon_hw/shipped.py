"""The example sequences shipped inside the package, found by their bare names.

`lipon-hw run lipon_rf_sputter` (or `lipon_rf_sputter.yaml`) runs the shipped recipe
from any directory of a wheel install; a path that exists is always taken as it is, so
`lipon-hw run sequences/lipon_rf_sputter.yaml` in the repository reads that file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def shipped_dir() -> Path:
    """The folder of the installed example sequences (`sequences/` of the repository)."""
    return Path(str(resources.files("lipon_hw.sequences")))


def shipped_names() -> list[str]:
    """Bare names of the shipped sequences, sorted."""
    return sorted(p.stem for p in shipped_dir().glob(f"*{SUFFIX}"))


def find_sequence(name: str | Path) -> str:
    """`name` itself when it names an existing file or is a path; else the shipped
    sequence of that bare name (with or without `.yaml`); else `name` unchanged, for
    the loader to say it does not exist."""
    text = str(name)
    if Path(text).exists() or "/" in text or "\\" in text:
        return text
    stem = text[:-len(SUFFIX)] if text.endswith(SUFFIX) else text
    candidate = shipped_dir() / f"{stem}{SUFFIX}"
    return str(candidate) if stem and candidate.is_file() else text
