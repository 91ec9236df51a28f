"""MERT, loaded natively on transformers' ``HubertModel`` (no ``trust_remote_code``).

The released MERT checkpoints (``model_type: "mert_model"``) are a HuBERT with extra config keys; their
weight names already match ``HubertModel`` (PROTOCOL §7), and the released remote code breaks on
transformers >= 4.48. We translate ``config.json`` into a :class:`~transformers.HubertConfig`:

* ``feature_extractor_cqt`` (a CQT branch concatenated to the conv features): **rejected** when true,
  ``HubertModel`` has no such input and silently dropping it would change the model.
* ``deepnorm`` (scaled residuals ``alpha * x + f(x)`` in every layer): **rejected** when true, for the
  same reason. No released MERT checkpoint uses either.
* ``attention_relax`` (> 0 in MERT-v1-330M): **ignored, exactly**. MERT computes
  ``(w / c - max_j(w / c)) * c = w - max_j w`` before the softmax: a per-row shift of the attention
  logits, which softmax is invariant to. It only kept fp16 training from overflowing; in fp32/bf16
  inference it is the same function (``tests/test_encoders_mert.py`` checks it numerically). In MERT's
  own code it is not even wired into the pre-LN encoder that 330M uses.
* ``sample_rate`` sets the encoder's rate; the rest are bookkeeping keys.

Input normalisation (PROTOCOL §2): zero-mean/unit-variance over the whole clip, on for MERT-v1-95M, v0
and v0-public, off for MERT-v1-330M. A directory's ``preprocessor_config.json`` (``do_normalize``) wins,
then the known-id table below, then on.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

from marble.encoders.hf import (
    EncoderLoadError,
    HFSpeechEncoder,
    build_with_weights,
    find_weights,
    read_json,
    snapshot_revision,
)

#: hub id -> sample rate and input normalisation (PROTOCOL §2, §7)
MERT_KNOWN: dict[str, dict[str, Any]] = {
    "m-a-p/MERT-v1-95M": {"sample_rate": 24000, "normalize": True},
    "m-a-p/MERT-v1-330M": {"sample_rate": 24000, "normalize": False},
    "m-a-p/MERT-v0": {"sample_rate": 16000, "normalize": True},
    "m-a-p/MERT-v0-public": {"sample_rate": 16000, "normalize": True},
}

#: MERT config keys with no HubertConfig counterpart, and what we do with them
MERT_ONLY_KEYS = {
    "feature_extractor_cqt": "must be false (CQT input branch not supported)",
    "feature_extractor_cqt_bins": "unused when feature_extractor_cqt is false",
    "deepnorm": "must be false (DeepNorm residual scaling not supported)",
    "attention_relax": "ignored: a softmax-invariant shift of the attention logits",
    "sample_rate": "encoder sample rate",
}
#: Hugging Face bookkeeping keys that do not describe the network
BOOKKEEPING_KEYS = {"_name_or_path", "architectures", "auto_map", "model_type", "torch_dtype", "dtype",
                    "transformers_version", "gradient_checkpointing", "num_feat_extract_layers",
                    "feat_extract_dropout", "use_cache"}


def is_mert_config(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == "mert_model" or any("MERT" in a for a in cfg.get("architectures") or [])


def hubert_config_from_mert(cfg: dict[str, Any], source: str = "config.json"):
    """Translate a MERT ``config.json`` dict into a ``HubertConfig`` (see the module docstring)."""
    from transformers import HubertConfig

    if cfg.get("feature_extractor_cqt"):
        raise EncoderLoadError(
            f"{source}: feature_extractor_cqt=true (MERT's CQT input branch) is not supported by the native "
            "HubertModel loader; no released MERT checkpoint uses it. Use a checkpoint without it or load the "
            "model through a file.py:Class plug-in.")
    if cfg.get("deepnorm"):
        raise EncoderLoadError(
            f"{source}: deepnorm=true (scaled residual connections) is not supported by the native HubertModel "
            "loader; no released MERT checkpoint uses it. Load such a model through a file.py:Class plug-in.")
    accepted = set(inspect.signature(HubertConfig.__init__).parameters) - {"self", "kwargs"}
    kwargs, unknown = {}, []
    for k, v in cfg.items():
        if k in accepted:
            kwargs[k] = v
        elif k not in MERT_ONLY_KEYS and k not in BOOKKEEPING_KEYS:
            unknown.append(k)
    if unknown:
        warnings.warn(f"{source}: ignoring config keys unknown to HubertConfig: {sorted(unknown)}", stacklevel=3)
    try:
        config = HubertConfig(**kwargs)
    except Exception as e:
        raise EncoderLoadError(f"{source}: not a valid HuBERT/MERT config ({type(e).__name__}: {e})") from None
    config._attn_implementation = "sdpa"
    return config


def save_mert_dir(directory: str | Path, config: dict[str, Any], state_dict: dict, *, normalize: bool,
                  sample_rate: int) -> Path:
    """The inverse of :func:`load_mert_dir`: write the released MERT repos' layout (``config.json``,
    ``model.safetensors`` with ``HubertModel`` weight names, ``preprocessor_config.json``), each file
    atomically. The one writer of the format, for ``marble pretrain export`` and the demo's tiny MERT."""
    from safetensors.torch import save

    from marble.io import atomic_open, write_json

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_open(directory / "model.safetensors") as f:
        f.write(save(weights, metadata={"format": "pt"}))
    write_json(directory / "config.json", config)
    write_json(directory / "preprocessor_config.json", {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "padding_side": "right",
        "padding_value": 0.0, "return_attention_mask": True, "do_normalize": bool(normalize),
        "sampling_rate": int(sample_rate)})
    return directory


class MERTEncoder(HFSpeechEncoder):
    """MERT on ``HubertModel``; all ``L + 1`` hidden states (13 for 95M, 25 for 330M)."""


def _known_entry(cfg: dict[str, Any], known_id: str | None) -> dict[str, Any]:
    if known_id in MERT_KNOWN:
        return MERT_KNOWN[known_id]
    name = str(cfg.get("_name_or_path", ""))
    for k, v in MERT_KNOWN.items():
        if name == k or name.rstrip("/").endswith(k.split("/")[1]):
            return v
    return {}


def load_mert_dir(directory: str | Path, *, name: str | None = None, known_id: str | None = None,
                  revision: str | None = None, device: str = "cpu") -> MERTEncoder:
    """Load a MERT checkpoint directory (config.json + model.safetensors or pytorch_model.bin)."""
    from transformers import HubertModel

    directory = Path(directory)
    cfg_path = directory / "config.json"
    cfg = read_json(cfg_path)
    config = hubert_config_from_mert(cfg, str(cfg_path))
    weights = find_weights(directory)
    model = build_with_weights(lambda: HubertModel(config), weights)
    known = _known_entry(cfg, known_id)
    pre_path = directory / "preprocessor_config.json"
    pre = read_json(pre_path) if pre_path.is_file() else {}
    if known_id in MERT_KNOWN:  # a known hub id: the protocol's table is binding (PROTOCOL §2)
        normalize = known["normalize"]
        if "do_normalize" in pre and bool(pre["do_normalize"]) != normalize:
            warnings.warn(f"{pre_path}: do_normalize={pre['do_normalize']} but the protocol says "
                          f"{normalize} for {known_id}; using {normalize}", stacklevel=2)
    else:
        normalize = pre.get("do_normalize", known.get("normalize", True))
    sr = pre.get("sampling_rate", cfg.get("sample_rate", known.get("sample_rate")))
    if sr is None:
        raise EncoderLoadError(f"{cfg_path}: no sample_rate in config.json or preprocessor_config.json; "
                               "add \"sample_rate\": 24000 (MERT-v1) or 16000 (MERT-v0)")
    if known and int(sr) != known["sample_rate"]:
        warnings.warn(f"{directory}: sample rate {sr} differs from the known {known['sample_rate']}", stacklevel=2)
    enc = MERTEncoder(model, name=name or known_id or str(directory), sample_rate=int(sr), normalize=bool(normalize),
                      weights_path=weights, revision=revision or snapshot_revision(directory), config_dict=cfg)
    return enc.to(device)
