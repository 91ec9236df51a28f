"""Which tests `make test-quick` leaves out: ``pytest -m "not slow"`` runs the fast unit tests (under 2 minutes on
2 cores); ``make test`` (CI) runs everything. A test is slow when it is marked ``@pytest.mark.slow`` or lives in a
file of :data:`SLOW_FILES`: end-to-end runs through real processes, training loops, extraction, the browser. Put a
new test that takes seconds there (or mark it) so the quick run stays quick."""

from __future__ import annotations

import pytest

SLOW_FILES = {
    # whole files of end-to-end work (CLI runs, subprocesses, training, extraction, the browser)
    "test_all_tasks.py", "test_beat_task.py", "test_bench_suite.py", "test_cli_errors.py", "test_cli_help.py",
    "test_cli_preflight.py", "test_compare.py", "test_conformance.py", "test_data_trust.py", "test_demo.py",
    "test_docs_api.py", "test_docs_encoders.py", "test_duplicates.py", "test_encoders_plugins.py", "test_extract.py",
    "test_extract_cli.py", "test_extract_resume.py", "test_extract_skips.py", "test_finetune.py",
    "test_finetune_resume.py", "test_frame_outputs.py", "test_frame_resume.py", "test_frame_tasks_cli.py",
    "test_hfcard.py", "test_interrupt.py", "test_leaderboard.py", "test_model_identity.py", "test_mtg_audio_variant.py",
    "test_pipeline.py", "test_plan.py", "test_plots.py", "test_precision.py", "test_pretrain_ddp.py",
    "test_pretrain_export.py", "test_pretrain_kmeans.py", "test_pretrain_train.py", "test_probe_file_batches.py",
    "test_probe_gs_monitor.py", "test_probe_run.py", "test_progress.py", "test_reproduce.py", "test_result_artifacts.py",
    "test_result_explains.py", "test_run.py", "test_separation.py", "test_settings.py", "test_site.py", "test_submit.py",
    "test_trust.py", "test_trust_cache.py", "test_trust_input.py", "test_trust_pretrain.py", "test_trust_submission.py",
    # seconds per test: local download server and archives, museval's BSSEval, the tasks table over 14 datasets
    "test_data_download.py", "test_metrics_separation.py", "test_cli_tasks.py", "test_user_task_results.py",
    "test_submit_offline.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves torch's thread count as it found it: a command run in process (``marble demo``, ``--threads``)
    sets it for the whole process, and a later test that compares an in-process run with a subprocess (which takes
    its count from OMP_NUM_THREADS) would then compare different reduction orders."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
