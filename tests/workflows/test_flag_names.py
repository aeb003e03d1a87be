"""The sample and eval jobs name the flags of the one naming rule (issue 20) in their messages and in the command
the ledger records: ``--samples``, ``--sample-steps``, ``-o/--output`` (never the old ``--n``, ``--steps``,
``--out``, which are hidden aliases now)."""

from __future__ import annotations

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.names import display_path
from greendiff.workflows import EvalJob, SampleJob, run_eval, run_sample
from greendiff.workflows._eval import reference_labels
from tests.workflows.conftest import measurement


@pytest.mark.parametrize("make, message", [
    (lambda: SampleJob(run="r", n=0), "--samples must be a positive integer up to 100000, got 0"),
    (lambda: SampleJob(run="r", steps=0), "--sample-steps must be a positive integer up to 100000, got 0"),
    (lambda: EvalJob(run="r", n=0), "--samples must be >= 4 and at most 1000000, got 0"),
    (lambda: EvalJob(run="r", steps=-1), "--sample-steps must be >= 0 and at most 100000, got -1"),
])
def test_job_fields_out_of_range_name_the_new_flags(make, message):
    with pytest.raises(UserInputError) as info:
        make()
    assert str(info.value) == message


def test_a_sample_output_of_another_kind_names_the_output_flag(tmp_path, parent):
    with pytest.raises(UserInputError) as info:
        run_sample(SampleJob(run=parent, n=2, out=tmp_path / "s.jpg", measurement=measurement(tmp_path / "l.sqlite")))
    assert str(info.value) == f"-o/--output must end in .png or .npz, got {display_path(tmp_path / 's.jpg')}"


def test_a_kid_subset_above_the_samples_and_too_few_samples_per_class_name_samples(tmp_path, parent):
    with pytest.raises(UserInputError) as info:
        run_eval(EvalJob(run=parent, n=8, kid_subset=9, measurement=measurement(tmp_path / "l.sqlite")))
    assert str(info.value) == "--kid-subset 9 exceeds --samples 8: too few samples for KID; raise --samples"
    with pytest.raises(UserInputError) as info:
        reference_labels(None, 10, 8)  # checked before the data is read
    assert str(info.value) == "--samples 8 is too few for a per-class FID over 10 classes: at least 20 (2 per class)"


def test_the_ledger_records_sample_and_eval_as_they_are_typed_now(tmp_path, parent):
    ledger = tmp_path / "l.sqlite"
    out = tmp_path / "s.png"
    run_sample(SampleJob(run=parent, n=2, steps=1, out=out, measurement=measurement(ledger)))
    run_eval(EvalJob(run=parent, n=8, steps=1, kid_subset=4, measurement=measurement(ledger)))
    commands = [r.command for r in sorted(Ledger(ledger).list_runs(), key=lambda r: r.id)]
    run = display_path(parent)
    assert commands == [f"greendiff sample --run {run} --samples 2 -o {display_path(out)}",
                        f"greendiff eval --run {run} --samples 8"]
