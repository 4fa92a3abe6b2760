"""The umask rule (issue 18) for the language-model artifacts: a tiny pretrained model, an RLHF
run (checkpoint, log, tuned model) and recorded activation stores, built through the CLI under
umask 022 and 077: every file and directory has 0o666 / 0o777 less the umask."""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_lm_artifacts_follow_the_umask(
    tmp_path, run_cli, random_lm_dir, corpus_file, bad_modes, mask
):
    old = os.umask(mask)
    try:
        run = tmp_path / "run"
        code, _, err = run_cli("llm", "pretrain-tiny", "--out", run / "tiny", "--steps", "2",
                               "--layers", "1", "--d-model", "16", "--threads", "1")  # fmt: skip
        assert code == 0, err
        code, _, err = run_cli("llm", "rlhf", "--model", run / "tiny", "--out", run / "rlhf",
                               "--steps", "1", "--batch-size", "4", "--mini-batch-size", "2",
                               "--max-new-tokens", "4", "--threads", "1")  # fmt: skip
        assert code == 0, err
        code, _, err = run_cli("llm", "record", "--model", random_lm_dir, "--layers", "1,2",
                               "--out", run / "acts", "--data", corpus_file, "--prefixes", "4",
                               "--prefix-tokens", "6")  # fmt: skip
        assert code == 0, err
    finally:
        os.umask(old)
    assert (run / "rlhf" / "model").is_dir() and any((run / "acts").iterdir())
    assert bad_modes(run, mask) == []
