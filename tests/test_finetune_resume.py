"""Fine-tuning survives kill -9 (a rerun ends with the weights of an uninterrupted run, bit-exact on CPU) and runs
data-parallel under torch.distributed (2 gloo ranks inside DistributedDataParallel equal 1 process with the
doubled batch, as pretraining does, tests/test_pretrain_ddp.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from marble.finetune.trainer import CHECKPOINT, load_state
from marble.registry import load_card
from marble.results import result_path
from marble.testing.fixtures import write_folder_dataset
from tests.encoder_ckpts import make_mert_dir

ROOT = Path(__file__).resolve().parent.parent
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}
# fp32 on CPU: 2 ranks x 2 crops and 1 process x 4 crops differ only in summation order (the batched forward, the
# all-reduce); measured differences are ~1e-7
ATOL = 1e-5


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftr")
    mdir, _ = make_mert_dir(root / "tiny-mert", **NO_DROPOUT)
    card_path = write_folder_dataset(root / "data", "multiclass", per_split=8, seconds=1.0)
    card_path.write_text(card_path.read_text() + "\n[head]\ndropout = 0.0\n")  # dropout masks follow the micro-batch
    return {"root": root, "mert": mdir, "card": load_card(card_path), "data": root / "data"}


def _artefacts(results: Path, name: str, card) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = result_path(results, name, card.id, "unconstrained").with_suffix("")
    out = {f"head.{k}": v for k, v in load_file(str(folder / "head.safetensors")).items()}
    adapter = folder / "adapter" / "adapter_model.safetensors"
    if adapter.is_file():
        out.update({f"adapter.{k}": v for k, v in load_file(str(adapter)).items()})
    return out


def _cli_args(task, results: Path) -> list[str]:
    return [sys.executable, "-m", "marble", "finetune", "--model", str(task["mert"]), "--task", str(task["card"].path),
            "--method", "lora", "--data-dir", str(task["data"]), "--results-dir", str(results), "--device", "cpu",
            "--lrs", "1e-2", "--max-epochs", "3", "--batch-size", "2", "--save-every", "1", "--num-workers", "0",
            "--warmup-ratio", "0.2", "-q"]


def test_sigkill_mid_run_then_rerun_gives_the_same_weights(task, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ref = subprocess.run(_cli_args(task, tmp_path / "ref"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    ckpt = result_path(out, "tiny-mert+lora", task["card"].id, "unconstrained").with_suffix("") / "run" / CHECKPOINT
    proc = subprocess.Popen(_cli_args(task, out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while not ckpt.is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_state(ckpt)["step"]  # complete (atomic), read with weights_only=True
    assert 1 <= killed_at < 12  # 8 training files / 2 a step x 3 epochs
    rerun = subprocess.run(_cli_args(task, out), cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    a, b = _artefacts(tmp_path / "ref", "tiny-mert+lora", task["card"]), _artefacts(out, "tiny-mert+lora", task["card"])
    assert a.keys() == b.keys() and len(a) == 5 + 8  # head: mixing vector + 2 linear layers; adapters: A, B x q, v x 2 layers
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-exact
    ra = json.loads(result_path(tmp_path / "ref", "tiny-mert+lora", task["card"].id, "unconstrained").read_text())
    rb = json.loads(result_path(out, "tiny-mert+lora", task["card"].id, "unconstrained").read_text())
    assert ra["sweep"] == rb["sweep"] and ra["test"] == rb["test"]


def test_a_checkpoint_carrying_code_is_refused(task, tmp_path):
    from marble.finetune import FinetuneError

    evil = tmp_path / CHECKPOINT

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "marble-finetune-1", "x": Boom()}, evil)
    with pytest.raises(FinetuneError, match="carry code .refused.*--fresh"):
        load_state(evil)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, kw: str, record: str) -> None:
    """One rank (forked): RANK/WORLD_SIZE/MASTER_ADDR as torchrun sets them, then run_finetune."""
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from marble.finetune import run as run_mod

    calls = {"ddp": 0}
    orig = torch.nn.parallel.DistributedDataParallel.__init__

    def init(self, *a, **k):
        calls["ddp"] += 1
        return orig(self, *a, **k)

    torch.nn.parallel.DistributedDataParallel.__init__ = init
    args = json.loads(kw)
    try:
        res = run_mod.run_finetune(load_card(args.pop("card")), **args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    Path(record, f"rank{rank}.json").write_text(json.dumps({"result": bool(res), "ddp": calls["ddp"]}))


def _kw(task, results: Path, batch_size: int) -> dict:
    return {"card": str(task["card"].path), "model_spec": str(task["mert"]), "method": "lora",
            "data_dir": str(task["data"]), "results_dir": str(results), "device": "cpu",
            "overrides": {"learning_rates": [1e-2], "max_epochs": 2, "batch_size": batch_size, "warmup_ratio": 0.0}}


def test_two_gloo_ranks_equal_one_process_with_the_doubled_batch(task, tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from marble.finetune.run import run_finetune

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _kw(task, tmp_path / "one", 4)
        run_finetune(load_card(one.pop("card")), **one)
        half = _kw(task, tmp_path / "half", 2)
        run_finetune(load_card(half.pop("card")), **half)
    finally:
        torch.set_num_threads(n)
    rec = tmp_path / "rec"
    rec.mkdir()
    mp.start_processes(_rank, args=(2, _free_port(), json.dumps(_kw(task, tmp_path / "two", 2)), str(rec)), nprocs=2,
                       join=True, start_method="fork")
    ranks = [json.loads((rec / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"result": True, "ddp": 1}, {"result": False, "ddp": 1}]  # DDP on both; rank 0 writes
    a = _artefacts(tmp_path / "one", "tiny-mert+lora", task["card"])
    b = _artefacts(tmp_path / "two", "tiny-mert+lora", task["card"])
    c = _artefacts(tmp_path / "half", "tiny-mert+lora", task["card"])
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= ATOL
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 100 * ATOL  # half the batch is far off
    r2 = json.loads(result_path(tmp_path / "two", "tiny-mert+lora", task["card"].id, "unconstrained").read_text())
    r1 = json.loads(result_path(tmp_path / "one", "tiny-mert+lora", task["card"].id, "unconstrained").read_text())
    assert (r2["training"]["world_size"], r2["training"]["effective_batch"]) == (2, 4)
    assert (r1["training"]["world_size"], r1["training"]["effective_batch"]) == (1, 4)
    assert r1["test"] == r2["test"]
