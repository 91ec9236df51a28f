"""Weight-free acoustic teachers: k-means codes of frame features (MERT-v0, HuBERT's first iteration).

``marble pretrain teacher fit`` draws random crops from a folder of audio (the same crop sampler as
training), computes frame features at the model's 75 Hz frame rate, standardises each feature dimension
and fits one scikit-learn ``MiniBatchKMeans`` codebook per feature group:

* iteration 1 (default): the built-in ``handcrafted`` encoder's log-mel (300 clusters) and chroma (200
  clusters) frames, MERT-v0's pair (PROTOCOL §7), or its MFCC (``--features mfcc``);
* iteration 2 (HuBERT): the hidden states of layer ``L`` of a marble checkpoint (``--features CKPT:L``,
  e.g. ``marble pretrain export``'s folder), one codebook.

Artefact: one ``.safetensors`` file (tensors only, no pickled code): per codebook ``centroids.NAME``
``[K, D]``, ``mean.NAME`` / ``std.NAME`` ``[D]``; its metadata holds the JSON description (feature source,
sample and frame rate, codebooks, fit settings) and ``sha256``, a hash of that description and every
tensor. :class:`KMeansTeacher` refuses an artefact whose hash does not verify, whose feature definition
differs from the code's (a changed built-in feature, a checkpoint whose weights changed since the fit) or
whose sample/frame rate is not the model's, and whose arrays are not finite (or whose std is not positive).

What the hash proves: the file is the one its writer wrote, unless someone rewrote it together with its hash (a
self-hash anyone can recompute): it catches corruption and careless edits, it is not a signature. So nothing an
artefact *names* is ever loaded: built-in features are resolved among the handcrafted groups, and a hidden-state
teacher's checkpoint is the one the user names (``pretrain run --teacher-encoder SPEC``), which must have the
identity (weights hash) recorded at the fit. Codes: the index of the nearest centroid (squared Euclidean,
as ``MiniBatchKMeans.predict``) of the standardised frame, one codebook per feature group; the model
predicts them with the same masked-prediction loss as EnCodec's codes (codebooks of unequal size are
padded, see :meth:`marble.pretrain.model.MERTPretrainModel.code_logits`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from marble.pretrain import PretrainError

FORMAT = "marble-kmeans-teacher-1"
PREFIX = "kmeans:"
#: built-in feature groups of the handcrafted encoder and their default cluster counts (PROTOCOL §7: MERT-v0)
HANDCRAFTED_CLUSTERS = {"logmel": 300, "chroma": 200, "mfcc": 100}
DEFAULT_FEATURES = "logmel,chroma"
DEFAULT_HIDDEN_CLUSTERS = 500


class TeacherMismatch(PretrainError):
    """A k-means teacher artefact that does not verify or does not fit this run."""


@dataclass
class FeatureSpec:
    """What the codebooks are fitted on: handcrafted groups, or layer ``layer`` of encoder ``encoder``."""

    groups: list[str]
    encoder: str = "handcrafted"
    layer: int | None = None

    @property
    def handcrafted(self) -> bool:
        return self.layer is None


def parse_features(spec: str) -> FeatureSpec:
    """``logmel,chroma`` / ``mfcc`` (built-in groups) or ``CHECKPOINT:LAYER`` (hidden states)."""
    spec = str(spec).strip()
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names and all(n in HANDCRAFTED_CLUSTERS for n in names):
        if len(set(names)) != len(names):
            raise PretrainError(f"--features {spec}: a feature group is listed twice")
        return FeatureSpec(groups=names)
    ckpt, sep, layer = spec.rpartition(":")
    if sep and ckpt and layer.strip().isdigit():
        return FeatureSpec(groups=[f"layer{int(layer)}"], encoder=ckpt, layer=int(layer))
    raise PretrainError(f"--features {spec!r}: expected built-in groups ({', '.join(HANDCRAFTED_CLUSTERS)}, comma-"
                        "separated, e.g. logmel,chroma) or CHECKPOINT:LAYER (a `marble pretrain export` folder and "
                        "the hidden state to cluster, e.g. models/my-mert:6)")


def _identity(encoder) -> dict[str, Any]:
    """The parts of an encoder's identity that decide its features (no local paths)."""
    ident = dict(encoder.identity())
    keep = ("class", "version", "sample_rate", "frame_rate", "hop", "n_fft", "n_mels", "n_mfcc", "layout",
            "weights_sha256", "normalize", "num_states", "dim")
    return {k: ident[k] for k in keep if k in ident}


class FrameFeatures:
    """Audio ``[B, T]`` at ``sample_rate`` -> ``{group: [B, T', D]}`` for a :class:`FeatureSpec`."""

    def __init__(self, spec: FeatureSpec, device: str | torch.device = "cpu", sample_rate: int = 24000):
        from marble.encoders import EncoderLoadError, load_encoder

        self.spec = spec
        try:
            if spec.handcrafted:
                from marble.encoders.handcrafted import HandcraftedEncoder

                self.encoder = HandcraftedEncoder(sample_rate=sample_rate, device=device).eval()
            else:
                self.encoder = load_encoder(spec.encoder, device=str(device))
        except EncoderLoadError as e:
            raise PretrainError(f"--features {spec.encoder}:{spec.layer}: {e}") from None
        if not spec.handcrafted and not 0 <= spec.layer < self.encoder.num_states:
            raise PretrainError(f"--features {spec.encoder}:{spec.layer}: layer {spec.layer} out of range; the "
                                f"checkpoint has hidden states 0..{self.encoder.num_states - 1}")
        self.sample_rate = int(self.encoder.sample_rate)
        self.frame_rate = float(self.encoder.frame_rate)

    def description(self) -> dict[str, Any]:
        return {"encoder": "handcrafted" if self.spec.handcrafted else str(self.spec.encoder),
                "layer": self.spec.layer, "groups": list(self.spec.groups), "identity": _identity(self.encoder)}

    @torch.no_grad()
    def __call__(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.spec.handcrafted:
            f = self.encoder.features(wav)
            return {g: f[g].float() for g in self.spec.groups}
        x = torch.stack([torch.from_numpy(self.encoder.prepare(w.cpu().numpy())) for w in wav])
        h = self.encoder.hidden_states(x, upto=self.spec.layer)[:, self.spec.layer]
        return {self.spec.groups[0]: h.float()}


# ---------------------------------------------------------------------------------------------- artefact

def content_hash(description: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """sha256 of the canonical JSON description and every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(description, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_teacher(path: str | Path, description: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """Write the artefact atomically; returns its hash."""
    from safetensors.numpy import save

    from marble.io import atomic_write_bytes

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    description = {"format": FORMAT, **description}
    digest = content_hash(description, tensors)
    meta = {"marble_teacher": json.dumps(description, sort_keys=True), "sha256": digest}
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return digest


def read_teacher(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """``(description, tensors, sha256)`` of a verified artefact; :class:`TeacherMismatch` otherwise."""
    from safetensors import safe_open

    p = Path(path).expanduser()
    refit = "refit it with `marble pretrain teacher fit --audio-dir DIR --out FILE`"
    if not p.is_file():
        raise TeacherMismatch(f"{p}: no k-means teacher there; {refit}")
    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        description = json.loads(meta["marble_teacher"])
        stored = meta["sha256"]
    except Exception as e:  # not safetensors, truncated, or another tool's file
        raise TeacherMismatch(f"{p}: not a marble k-means teacher ({type(e).__name__}: {e}); {refit}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        fmt = description.get("format") if isinstance(description, dict) else None
        raise TeacherMismatch(f"{p}: teacher format {fmt!r}, expected {FORMAT!r}; {refit}")
    digest = content_hash(description, tensors)
    if digest != stored:
        raise TeacherMismatch(f"{p}: hash mismatch (stored {str(stored)[:12]}, content {digest[:12]}): the file was "
                              f"modified or is corrupt; {refit}")
    _check_contents(p, description, tensors, refit)
    return description, tensors, digest


def _check_contents(p: Path, description: dict, tensors: dict[str, np.ndarray], refit: str) -> None:
    """Shapes, rates and values a teacher needs: the hash can be recomputed by anyone, so the contents are checked
    as data (finite centroids, positive finite std), not trusted for having a matching hash."""
    books = description.get("codebooks")
    rates = [description.get("sample_rate"), description.get("frame_rate")]
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in rates):
        raise TeacherMismatch(f"{p}: sample/frame rate {rates} are not positive numbers; {refit}")
    if not isinstance(books, list) or not books:
        raise TeacherMismatch(f"{p}: the description lists no codebooks; {refit}")
    for cb in books:
        name, size = (cb.get("name"), cb.get("size")) if isinstance(cb, dict) else (None, None)
        if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise TeacherMismatch(f"{p}: codebook entry {cb!r} is malformed (a name and a size >= 2); {refit}")
        for part in ("centroids", "mean", "std"):
            if f"{part}.{name}" not in tensors:
                raise TeacherMismatch(f"{p}: tensor {part}.{name} missing; {refit}")
        c, m, s = (np.asarray(tensors[f"{x}.{name}"]) for x in ("centroids", "mean", "std"))
        if c.ndim != 2 or c.shape[0] != size or m.shape != (c.shape[1],) or s.shape != (c.shape[1],):
            raise TeacherMismatch(f"{p}: codebook {name} has inconsistent shapes (centroids {c.shape}, mean {m.shape}, "
                                  f"std {s.shape}, size {size}); {refit}")
        for what, a in (("centroids", c), ("mean", m), ("std", s)):
            if not np.isfinite(a).all():
                raise TeacherMismatch(f"{p}: codebook {name}: {what} hold NaN or inf values; {refit}")
        if (s <= 0).any():
            raise TeacherMismatch(f"{p}: codebook {name}: std has {int((s <= 0).sum())} zero or negative value(s) "
                                  f"(standardising would divide by them); {refit}")


# ---------------------------------------------------------------------------------------------- fitting

def fit_codebook(frames: np.ndarray, n_clusters: int, seed: int, batch_size: int = 4096,
                 max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise ``frames [N, D]`` per dimension and fit ``MiniBatchKMeans``; returns ``(centroids
    [K, D] in standardised space, mean [D], std [D])``."""
    from sklearn.cluster import MiniBatchKMeans

    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[0] < n_clusters:
        raise PretrainError(f"only {frames.shape[0]} frames for {n_clusters} clusters; use more audio "
                            "(--crops) or fewer clusters (--clusters)")
    mean = frames.mean(axis=0)
    std = frames.std(axis=0) + 1e-5
    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, batch_size=batch_size, max_iter=max_iter,
                         n_init=3).fit((frames - mean) / std)
    return km.cluster_centers_.astype(np.float32), mean, std


def fit_teacher(audio_dir: str | Path, out: str | Path, features: str = DEFAULT_FEATURES,
                clusters: list[int] | None = None, crops: int = 512, crop_seconds: float = 5.0,
                max_frames: int = 200_000, seed: int = 0, device: str = "cpu",
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fit the codebooks on ``crops`` random crops of ``audio_dir`` and write the artefact ``out``."""
    from marble.pretrain.data import CropBatches, list_audio_files

    spec = parse_features(features)
    if clusters is None:
        clusters = [HANDCRAFTED_CLUSTERS.get(g, DEFAULT_HIDDEN_CLUSTERS) for g in spec.groups]
    if len(clusters) != len(spec.groups):
        raise PretrainError(f"--clusters {','.join(map(str, clusters))}: one count per feature group "
                            f"({', '.join(spec.groups)})")
    if any(k < 2 for k in clusters):
        raise PretrainError("--clusters: every codebook needs at least 2 clusters")
    feats = FrameFeatures(spec, device=device)
    files = list_audio_files(audio_dir)
    per_step = 8
    steps = max(1, -(-int(crops) // per_step))
    data = CropBatches(files, feats.sample_rate, crop_seconds, per_step, seed, steps)
    collected: dict[str, list[np.ndarray]] = {g: [] for g in spec.groups}
    skipped: set[str] = set()
    for s in range(steps):
        batch = data[s]
        skipped.update(p for p, _ in batch["skipped"])
        for g, v in feats(batch["wav"]).items():
            collected[g].append(v.reshape(-1, v.shape[-1]).cpu().numpy())
        if progress is not None:
            progress(s + 1, steps)
    rng = np.random.default_rng(seed)
    description: dict[str, Any] = {
        "sample_rate": feats.sample_rate, "frame_rate": feats.frame_rate, "features": feats.description(),
        "codebooks": [],
        "fit": {"audio_dir": str(audio_dir), "num_files": len(files), "crops": steps * per_step,
                "crop_seconds": float(crop_seconds), "seed": int(seed), "max_frames": int(max_frames),
                "algorithm": "sklearn.cluster.MiniBatchKMeans on per-dimension standardised frames"}}
    tensors: dict[str, np.ndarray] = {}
    for g, k in zip(spec.groups, clusters):
        frames = np.concatenate(collected[g])
        if frames.shape[0] > max_frames:
            frames = frames[np.sort(rng.choice(frames.shape[0], max_frames, replace=False))]
        c, mean, std = fit_codebook(frames, int(k), seed)
        tensors.update({f"centroids.{g}": c, f"mean.{g}": mean, f"std.{g}": std})
        description["codebooks"].append({"name": g, "size": int(k), "dim": int(c.shape[1]),
                                         "frames": int(frames.shape[0])})
    digest = save_teacher(out, description, tensors)
    return {"path": str(Path(out).expanduser()), "sha256": digest, "codebooks": description["codebooks"],
            "skipped_files": sorted(skipped)}


# ---------------------------------------------------------------------------------------------- teacher

def feature_spec(path: Path, description: dict[str, Any], encoder: str | None) -> FeatureSpec:
    """The features an artefact's codebooks were fitted on, resolved only among the built-in handcrafted groups
    or the ``encoder`` the user names (never a model the artefact names: its name is only a hint)."""
    fd = description.get("features")
    groups, layer = (fd.get("groups"), fd.get("layer")) if isinstance(fd, dict) else (None, None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
        raise TeacherMismatch(f"{path}: the description names no feature groups; not a teacher marble wrote")
    if layer is None:
        unknown = [g for g in groups if g not in HANDCRAFTED_CLUSTERS]
        if unknown or fd.get("encoder") != "handcrafted":
            raise TeacherMismatch(f"{path}: features {fd.get('encoder')!r} / {unknown or groups} are not marble's "
                                  f"built-in groups ({', '.join(HANDCRAFTED_CLUSTERS)}); refit the teacher")
        if encoder is not None:
            raise TeacherMismatch(f"{path}: the teacher uses built-in features ({', '.join(groups)}); "
                                  "--teacher-encoder applies to teachers of hidden states only")
        return FeatureSpec(groups=list(groups))
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or groups != [f"layer{layer}"]:
        raise TeacherMismatch(f"{path}: hidden-state layer {layer!r} / groups {groups} are malformed; refit the teacher")
    if not encoder:
        raise TeacherMismatch(f"{path}: its codes are fitted on hidden state {layer} of a checkpoint (recorded as "
                              f"{str(fd.get('encoder'))[:200]!r}); marble never loads a model an artefact names: "
                              "name the checkpoint yourself with --teacher-encoder SPEC (it must be the one the "
                              "teacher was fitted on)")
    return FeatureSpec(groups=list(groups), encoder=str(encoder), layer=layer)


class KMeansTeacher:
    """``codes(wav [B, T])`` -> ``LongTensor [B, num_codebooks, frames]`` from a verified artefact; same
    interface as :class:`~marble.pretrain.teachers.encodec.EncodecTeacher`. ``encoder``: the checkpoint of a
    hidden-state teacher, as the user names it (see :func:`feature_spec`)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", encoder: str | None = None):
        self.path = Path(path).expanduser()
        desc, tensors, self.sha256 = read_teacher(self.path)
        self.description = desc
        fd = desc["features"]
        spec = feature_spec(self.path, desc, encoder)
        self.features = FrameFeatures(spec, device=device, sample_rate=int(desc["sample_rate"]))
        now = _identity(self.features.encoder)
        if now != fd["identity"]:
            diff = sorted(k for k in set(now) | set(fd["identity"]) if now.get(k) != fd["identity"].get(k))
            raise TeacherMismatch(
                f"{self.path}: its features no longer match ({', '.join(diff)} differ between the fit and "
                f"{fd['encoder']!r} now{': the checkpoint weights changed' if 'weights_sha256' in diff else ''}); "
                "refit the teacher on the current features with `marble pretrain teacher fit`")
        self.sample_rate = int(desc["sample_rate"])
        self.frame_rate = float(desc["frame_rate"])
        self.names = [cb["name"] for cb in desc["codebooks"]]
        self.codebook_sizes = [int(cb["size"]) for cb in desc["codebooks"]]
        self.num_codebooks = len(self.names)
        self.codebook_size = max(self.codebook_sizes)
        dev = torch.device(device)
        self._params = {n: tuple(torch.from_numpy(np.asarray(tensors[f"{p}.{n}"], dtype=np.float32)).to(dev)
                                 for p in ("centroids", "mean", "std")) for n in self.names}

    def info(self) -> dict[str, Any]:
        return {"kind": "kmeans", "source": str(self.path), "sha256": self.sha256, "codebooks": self.names,
                "codebook_sizes": self.codebook_sizes, "features": self.description["features"]["encoder"],
                "layer": self.description["features"]["layer"]}

    def to(self, device) -> "KMeansTeacher":
        self._params = {n: tuple(t.to(device) for t in v) for n, v in self._params.items()}
        return self

    @torch.no_grad()
    def codes(self, wav: torch.Tensor) -> torch.Tensor:
        feats = self.features(wav.float())
        out = []
        for n in self.names:
            c, m, s = self._params[n]
            x = ((feats[n].to(c.device) - m) / s).double()             # [B, T, D]; fp64: no near-tie flips
            c = c.double()
            d = x.pow(2).sum(-1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(-1)  # [B, T, K] squared distances
            out.append(d.argmin(-1))
        n = min(o.shape[1] for o in out)
        return torch.stack([o[:, :n] for o in out], dim=1).long()
