"""Study presets: JSON files shipped in the package (``fnaf_jax/study/preset_files/``:
``mini``, ``smoke``, ``synthetic``, ``paper``) or any JSON file with the same sections."""

from __future__ import annotations

import json
from pathlib import Path

from fnaf_jax.errors import ConfigError

# inside the package, so a plain (non-editable) install can run them
PRESET_DIR = Path(__file__).resolve().parent / "preset_files"
SECTIONS = ("data", "masks", "unet", "robust", "irim", "attack")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path) -> dict:
    """The preset called ``name`` (``preset_files/NAME.json``) or the JSON at a path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        path = PRESET_DIR / f"{text}.json"
        if not path.is_file():
            raise ConfigError(f"unknown preset {text!r}; known: {', '.join(preset_names())} "
                              f"(or give the path of a JSON file)")
    try:
        preset = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read preset ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: preset is not valid JSON ({exc})") from None
    if not isinstance(preset, dict):
        raise ConfigError(f"{path}: preset must be a JSON object")
    missing = [s for s in SECTIONS if not isinstance(preset.get(s), dict)]
    if missing:
        raise ConfigError(f"{path}: preset lacks section(s) {missing}")
    source = preset["irim"].get("source", "train")
    if source not in ("train", "convert"):
        raise ConfigError(f"{path}: irim.source must be 'train' or 'convert', got {source!r}")
    if not preset["masks"].get("eval"):
        raise ConfigError(f"{path}: masks.eval lists no acceleration to evaluate")
    preset.setdefault("name", path.stem)
    preset["_path"] = str(path)
    return preset
