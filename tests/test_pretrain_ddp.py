"""Gradient accumulation and data-parallel pretraining (2 gloo ranks on CPU, forked by torch.multiprocessing,
training inside torch's DistributedDataParallel): batch 2 x accumulate 2, 2 ranks x batch 2 and 2 ranks x batch 1 x
accumulate 2 (no_sync) give the update of one process with the same micro-batches; only rank 0 writes files; an interrupted 2-rank
run resumes from its checkpoint; a resume must keep the effective batch.

Mixup is off in the equivalence tests: its segments come from the clip's own micro-batch, so a different
split of the step's crops mixes different pairs (masks and crops are seeded per clip and do not change)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch

from marble.errors import MarbleError
from marble.pretrain.trainer import CHECKPOINT, LOG, RUN_JSON, EffectiveBatchMismatch, TrainConfig, load_checkpoint, train

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from pretrain_helpers import ddp_worker, make_tiny_encodec, write_audio  # noqa: E402

STEPS = 4
# fp32 on CPU: the splits differ only in summation order (batched convolutions, the all-reduce); measured
# differences are below 1e-6. All runs use one thread, as the forked ranks must: with 2 threads the tiny random
# EnCodec's nearest-code choices can flip, which changes the targets and the weights by ~1e-2.
ATOL, RTOL = 1e-5, 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-ddp")
    write_audio(root / "audio", n=5, seconds=2.0)
    return {"audio": root / "audio", "encodec": make_tiny_encodec(root / "encodec")}


def _kw(corpus, out, **over) -> dict:
    base = dict(audio_dir=str(corpus["audio"]), out_dir=str(out), preset="tiny", steps=STEPS, warmup_steps=1,
                batch_size=4, crop_seconds=1.0, teacher=str(corpus["encodec"]), device="cpu", save_every=2, log_every=1,
                seed=5, num_workers=0, mixup_prob=0.0)
    base.update(over)
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path: Path, kw: dict, stop_rank: int = -1, stop_at: int = -1) -> list[dict]:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    rec = tmp_path / f"rec-{_free_port()}"
    rec.mkdir()
    # fork: CPU only, and no second import of torch / transformers per rank (keeps the test fast)
    mp.start_processes(ddp_worker, args=(2, _free_port(), json.dumps(kw), str(rec), stop_rank, stop_at), nprocs=2,
                       join=True, start_method="fork")
    return [json.loads((rec / f"rank{r}.json").read_text()) for r in (0, 1)]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _close(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=k)


@pytest.fixture(scope="module")
def one_process_batch4(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("b4") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(**_kw(corpus, out)), progress=False)
    finally:
        torch.set_num_threads(n)
    return load_checkpoint(out)


def test_accumulate_equals_larger_batch(corpus, tmp_path, one_process_batch4):
    ref = one_process_batch4
    losses = []
    train(TrainConfig(**_kw(corpus, tmp_path / "acc", batch_size=2, accumulate=2)), progress=False,
          on_step=lambda s, m: losses.append(m))
    acc = load_checkpoint(tmp_path / "acc")
    _close(acc["model"], ref["model"])
    assert acc["effective_batch"] == ref["effective_batch"] == 4
    # the whole step's metrics: all 4 clips' masked frames, the loss of the full batch
    ref_log = [json.loads(x) for x in (Path(ref["run"]["out_dir"]) / LOG).read_text().splitlines()]
    assert [m["masked_frames"] for m in losses] == [r["masked_frames"] for r in ref_log]
    assert [round(m["loss"], 4) for m in losses] == pytest.approx([r["loss"] for r in ref_log], abs=2e-4)
    # the tolerance tells the runs apart: half the crops per step (batch 2, no accumulation) is far off
    train(TrainConfig(**_kw(corpus, tmp_path / "half", batch_size=2)), progress=False)
    assert _max_diff(load_checkpoint(tmp_path / "half")["model"], ref["model"]) > 100 * ATOL


def test_two_ranks_equal_one_process(corpus, tmp_path, one_process_batch4):
    out = tmp_path / "run"
    res = _two_ranks(tmp_path, _kw(corpus, out, batch_size=2))
    assert [r["step"] for r in res] == [STEPS, STEPS] and res[0]["loss"] == res[1]["loss"]
    assert [(r["ddp"], r["no_sync"]) for r in res] == [(1, 0), (1, 0)]  # DDP; no accumulation, no no_sync
    two = load_checkpoint(out)
    _close(two["model"], one_process_batch4["model"])
    assert two["world_size"] == 2 and two["effective_batch"] == 4
    run = json.loads((out / RUN_JSON).read_text())
    assert run["world_size"] == 2 and run["effective_batch"] == 4 and run["effective_batch_seconds"] == 4.0
    # only rank 0 wrote: run.json once, the checkpoint at steps 2 and 4, one log line per step
    assert res[0]["writes"] == [RUN_JSON, CHECKPOINT, CHECKPOINT] and res[1]["writes"] == []
    assert len((out / LOG).read_text().splitlines()) == STEPS
    assert sorted(p.name for p in out.iterdir()) == sorted([CHECKPOINT, LOG, RUN_JSON])


def test_two_ranks_interrupted_then_resumed(corpus, tmp_path):
    """2 ranks x batch 1 x accumulate 2 (DDP, no_sync on the first micro-batch of each step), interrupted and
    resumed, equals 1 process x batch 1 x accumulate 4: the same micro-batches (batch-1 micro-batches are
    compared with batch-1 micro-batches: the tiny EnCodec's codes of a clip can flip with the batch shape)."""
    ref = tmp_path / "one"
    train(TrainConfig(**_kw(corpus, ref, batch_size=1, accumulate=4)), progress=False)
    out = tmp_path / "run"
    kw = _kw(corpus, out, batch_size=1, accumulate=2, save_every=100)
    # Ctrl-C in rank 1 after step 1: both ranks stop after step 2 (the flag travels with the next all-reduce)
    res = _two_ranks(tmp_path, kw, stop_rank=1, stop_at=1)
    assert [r["interrupted"] for r in res] == [True, True]
    assert load_checkpoint(out)["step"] == 2 and res[1]["writes"] == []
    assert [r["no_sync"] for r in res] == [2, 2]  # one per step
    res = _two_ranks(tmp_path, kw)
    assert [(r["resumed_from"], r["step"]) for r in res] == [(2, STEPS), (2, STEPS)]
    assert [(r["ddp"], r["no_sync"]) for r in res] == [(1, 2), (1, 2)]
    _close(load_checkpoint(out)["model"], load_checkpoint(ref)["model"])


def test_resume_needs_the_same_effective_batch(corpus, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**_kw(corpus, out, steps=2)), progress=False)  # 1 process x batch 4
    with pytest.raises(EffectiveBatchMismatch, match=r"checkpoint\.pt.*effective batch of 4.*2 x 1 x 1.*--accumulate 2"):
        train(TrainConfig(**_kw(corpus, out, steps=3, batch_size=2)), progress=False)
    assert issubclass(EffectiveBatchMismatch, MarbleError)
    # the same product split differently resumes
    summary = train(TrainConfig(**_kw(corpus, out, steps=3, batch_size=2, accumulate=2)), progress=False)
    assert summary["resumed_from"] == 2 and summary["step"] == 3
    with pytest.raises(MarbleError, match="--accumulate 0: must be at least 1"):
        train(TrainConfig(**_kw(corpus, out, accumulate=0)), progress=False)
