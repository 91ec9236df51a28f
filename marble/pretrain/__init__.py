"""MERT-style self-supervised pretraining (PROTOCOL §7, MERT-v1 recipe) on transformers' ``HubertModel``.

Modules: :mod:`.config` (presets), :mod:`.attention` (attention relaxation), :mod:`.model` (backbone +
prediction heads), :mod:`.teachers` (EnCodec codes, k-means codes of frame features, CQT), :mod:`.masking`, :mod:`.mixup`, :mod:`.losses`,
:mod:`.data` (random crops from a folder of audio), :mod:`.trainer` (resumable loop), :mod:`.export`
(the checkpoint layout ``marble extract --model DIR`` loads).
"""

from marble.errors import MarbleError


class PretrainError(MarbleError, RuntimeError):
    """Bad pretraining input (audio folder, teacher, checkpoint); the message names the file and the fix."""


__all__ = ["PretrainError"]
