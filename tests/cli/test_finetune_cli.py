"""``greendiff finetune`` from the command line (issue 22): its help, bad input as one line with exit 2 and
nothing created, and a tiny LoRA run that prints its run directory."""

from __future__ import annotations

import shutil

import pytest

from tests.cli.test_train_cli import run_cli
from tests.train.conftest import captioned_digits, tiny_sd  # noqa: F401 (fixtures)

TINY = ["--batch-size", "4", "--max-steps", "2", "--eval-every", "2", "--sample-steps", "2",
        "--set", "run.num_samples=1", "--set", "finetune.validation_images=2", "--set", "optim.mixed_precision=no",
        "--no-gpu"]


def _paths(tmp_path) -> list[str]:
    return ["--output-dir", str(tmp_path / "runs"), "--ledger", str(tmp_path / "ledger.sqlite"),
            "--latent-cache-dir", str(tmp_path / "cache" / "latents")]


def test_help_lists_the_pipeline_and_lora_flags(capsys):
    code, out, _ = run_cli(capsys, "finetune", "--help")
    assert code == 0
    for flag in ("--pipeline", "--lora-rank", "--full", "--dataset", "--instance-data", "--merge"):
        assert flag in out


def _bad_argv(case: str, tmp_path, sd, data) -> list[str]:
    if case == "missing --pipeline":
        return ["--dataset", str(data)]
    if case == "rank 0":
        return ["--pipeline", str(sd), "--dataset", str(data), "--lora-rank", "0"]
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "vae")
    return ["--pipeline", str(broken), "--dataset", str(data)]


@pytest.mark.parametrize("case, words", [("missing --pipeline", "--pipeline"), ("rank 0", "rank"),
                                         ("pipeline without vae", "vae")])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(capsys, tmp_path, tiny_sd, captioned_digits, case,
                                                             words):
    code, out, err = run_cli(capsys, "finetune", *_bad_argv(case, tmp_path, tiny_sd, captioned_digits), *TINY,
                             *_paths(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ledger.sqlite").exists()
    assert not (tmp_path / "cache").exists()


def test_a_tiny_lora_run_exits_0_and_prints_its_run_directory(capsys, tmp_path, tiny_sd, captioned_digits):
    code, out, err = run_cli(capsys, "finetune", "--pipeline", str(tiny_sd), "--dataset", str(captioned_digits),
                             "--lora-rank", "2", *TINY, *_paths(tmp_path))
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name in " ".join((out + err).split())
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (run_dir / "lora" / "README.md").is_file() and (run_dir / "emissions.json").is_file()
