"""Pretraining targets computed from the clean audio: EnCodec RVQ codes (acoustic teacher) and the CQT
(musical teacher) of MERT-v1."""

from marble.pretrain.teachers.cqt import CQT
from marble.pretrain.teachers.encodec import EncodecTeacher, align_frames

__all__ = ["CQT", "EncodecTeacher", "align_frames"]
