"""Saving and loading models: weights as safetensors, configs as JSON, never a pickle.

A model folder holds `model.safetensors` (weights, fp32 or fp16) and `config.json`
(`{"model": ModelConfig, "features": FeatureConfig, "alphabet": [...], "meta": {...}}`).
Training resume state is a separate `torch.save` file, read back with `weights_only=True`, which
refuses anything but tensors and plain containers.
"""

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .features import FeatureConfig
from .model import DeepSpeech2, ModelConfig
from .text import ALPHABET

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(RuntimeError):
    """A model folder or resume file that is missing, corrupt or does not fit; names the file."""


def save_model(model_dir, model: DeepSpeech2, features: FeatureConfig, meta: dict | None = None,
               half: bool = False) -> Path:
    """Write model.safetensors and config.json into `model_dir`, atomically per file."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    config = {"model": model.config.to_dict(), "features": features.__dict__, "alphabet": list(ALPHABET),
              "meta": meta or {}}
    tmp = model_dir / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, model_dir / WEIGHTS)
    atomic_write_text(model_dir / CONFIG, json.dumps(config, indent=2) + "\n")
    return model_dir


def load_model(model_dir, device: str | torch.device = "cpu") -> tuple[DeepSpeech2, FeatureConfig, dict]:
    """Read a model folder -> (model in eval mode, its FeatureConfig, the config's meta dict)."""
    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / CONFIG, model_dir / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (a model folder needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads(config_path.read_text())
        model_config = ModelConfig.from_dict(config["model"])
        features = FeatureConfig(**config["features"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a valid ds2 model config ({e})") from None
    if config.get("alphabet", list(ALPHABET)) != list(ALPHABET):
        raise CheckpointError(f"{config_path}: alphabet {config['alphabet']} differs from this version's")
    if model_config.n_feats != features.n_feats:
        raise CheckpointError(f"{config_path}: model expects {model_config.n_feats} features, "
                              f"its feature config gives {features.n_feats}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: corrupt or truncated weights ({e})") from None
    model = DeepSpeech2(model_config)
    load_state(model, state, weights_path)
    return model.to(device).eval(), features, config.get("meta", {})


def require_same_setup(source, config: ModelConfig, features: FeatureConfig,
                       want_config: ModelConfig, want_features: FeatureConfig, network: bool = True) -> None:
    """Refuse weights whose model config or features differ from what the caller builds; names the fields.
    With network=False, only the features and the output classes must match (a model decoding the
    same features as another, say a widened one against its start)."""
    model, want_model = config.to_dict(), want_config.to_dict()
    if not network:
        model, want_model = {"n_classes": model["n_classes"]}, {"n_classes": want_model["n_classes"]}
    diffs = [f"{part}.{key} {theirs.get(key)!r} vs {ours.get(key)!r}"
             for part, theirs, ours in (("model", model, want_model),
                                        ("features", features.__dict__, want_features.__dict__))
             for key in sorted(set(theirs) | set(ours)) if theirs.get(key) != ours.get(key)]
    if diffs:
        what = "model or features" if network else "features or output classes"
        raise CheckpointError(f"{source}: its {what} differ ({'; '.join(diffs)})")


def load_state(model: torch.nn.Module, state: dict, source) -> None:
    """Load a state dict, naming the file and the first mismatches instead of a long traceback."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            missing and f"missing {', '.join(missing[:3])}", unexpected and f"unexpected {', '.join(unexpected[:3])}",
            wrong and f"shape mismatch {', '.join(wrong[:3])}"]))
        raise CheckpointError(f"{source}: weights do not fit this model config ({detail})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def save_resume_state(path, state: dict) -> None:
    """torch.save to a temp file then rename: a crash mid-write leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_resume_state(path) -> dict:
    """Read a resume file with weights_only=True: code hidden in a pickle is refused, not run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such resume file") from None
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load resume state safely ({str(e).splitlines()[0][:200]})") from None


def atomic_write_text(path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
