from __future__ import annotations

import re

import pytest

from greendiff.errors import UserInputError
from greendiff.train import RecipeConfig, resolve_config, to_toml
from greendiff.train._config import BASELINE


def test_baseline_matches_diffusers_train_unconditional_defaults():
    b = BASELINE
    assert (b.mixed_precision, b.prediction_type, b.loss_weighting, b.beta_schedule) == ("no", "epsilon", "uniform", "linear")
    assert (b.lr, b.adam_beta1, b.adam_beta2, b.weight_decay) == (1e-4, 0.95, 0.999, 1e-6)
    assert (b.lr_schedule, b.warmup_steps, b.batch_size, b.ema, b.grad_clip) == ("cosine", 500, 16, False, 1.0)
    assert (b.ema_power, b.ema_max_decay) == (0.75, 0.9999)  # train_unconditional.py --use_ema defaults
    assert (b.sampler, b.sample_steps) == ("ddpm", 1000)


def test_green_turns_every_lever_on():
    g = RecipeConfig()
    assert (g.mixed_precision, g.loss_weighting, g.snr_gamma, g.beta_schedule) == ("auto", "min-snr", 5.0, "squaredcos_cap_v2")
    assert g.ema and g.ema_warmup and g.sampler == "ddim" and g.sample_steps <= 50 and g.batch_size > BASELINE.batch_size


def test_green_learning_rate_comes_from_the_preset_unless_set():
    assert resolve_config(overrides={"model.preset": "nano"}).optim.lr == 2e-3
    assert resolve_config(overrides={"model.preset": "tiny"}).optim.lr == 1e-3
    assert resolve_config(overrides={"model.preset": "tiny", "optim.lr": 3e-4}).optim.lr == 3e-4
    assert resolve_config(overrides={"model.preset": "nano", "recipe": "baseline"}).optim.lr == 1e-4
    with pytest.raises(UserInputError, match="optim.lr must be positive"):
        resolve_config(overrides={"optim.lr": -1e-3})


def test_precedence_defaults_recipe_file_cli(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('recipe = "baseline"\n[optim]\nlr = 3e-4\nbatch_size = 32\n[run]\nmax_steps = 7\n')
    c = resolve_config(path, {"optim.batch_size": 8})
    assert c.recipe == "baseline" and c.optim.loss_weighting == "uniform"  # recipe
    assert c.optim.lr == 3e-4 and c.run.max_steps == 7  # file
    assert c.optim.batch_size == 8  # CLI wins
    assert resolve_config(path, {"recipe": "green"}).optim.loss_weighting == "min-snr"


def test_resolved_config_round_trips_through_toml(tmp_path):
    c = resolve_config(overrides={"model.block_out_channels": "8,16", "optim.ema": "false"})
    path = tmp_path / "config.toml"
    path.write_text(to_toml(c))
    assert resolve_config(path) == c


@pytest.mark.parametrize(("overrides", "message"), [
    ({"run.max_steps": -5}, "run.max_steps must be a positive integer"),
    ({"optim.lr": "fast"}, "optim.lr must be a number"),
    ({"optim.loss_weighting": "p2"}, "optim.loss_weighting must be one of uniform, min-snr"),
    ({"optim.nonsense": 1}, "unknown config key 'optim.nonsense'"),
    ({"recipe": "turbo"}, "unknown recipe 'turbo'"),
    ({"optim.ema": "maybe"}, "optim.ema must be true or false"),
    ({"optim.sample_steps": 5000}, "cannot exceed"),
    ({"model.block_out_channels": "8,x"}, "must be an integer"),
    ({"distill.kind": "output"}, "needs distill.teacher"),
    ({"distill.kind": "steps", "distill.teacher": "t", "distill.teacher_steps": 30}, "must be even and divide"),
    ({"distill.kind": "steps", "distill.teacher": "t", "distill.teacher_steps": 40}, "optim.sample_steps = 20"),
    ({"distill.kind": "output", "distill.teacher": "t", "distill.output_weight": -1}, "must be >= 0"),
    ({"distill.kind": "output", "distill.teacher": "t", "distill.output_weight": 0, "distill.feature_weight": 0,
      "distill.data_weight": 0}, "are all 0: the student would learn nothing"),
    ({"model.block_out_channels": "16,,32"}, r"'16,,32' has an empty item"),
    ({"model.block_out_channels": "16,32,"}, "has an empty item"),
    ({"model.block_out_channels": ""}, "model.block_out_channels is empty: give the integers"),
    ({"model.block_out_channels": " "}, "model.block_out_channels is empty"),
    ({"run.log_to": "tensorboard,,mlflow"}, "has an empty item"),
    ({"data.dataset": ""}, "data.dataset is empty"),
    ({"data.dataset": "  "}, "data.dataset is only spaces"),
    ({"run.output_dir": ""}, "run.output_dir is empty"),
    ({"run.output_dir": "   "}, "run.output_dir is only spaces"),
    ({"model.init_from": "   "}, "model.init_from is only spaces"),
    ({"distill.kind": "output", "distill.teacher": " "}, "distill.teacher is only spaces"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(UserInputError, match=message):
        resolve_config(overrides=overrides)


def test_bad_toml_file(tmp_path):
    (tmp_path / "bad.toml").write_text("[optim\nlr = ")
    with pytest.raises(UserInputError, match="invalid TOML"):
        resolve_config(tmp_path / "bad.toml")
    with pytest.raises(UserInputError, match="does not exist"):
        resolve_config(tmp_path / "missing.toml")


def test_a_derived_config_starts_from_base_settings_instead_of_a_file():
    c = resolve_config(overrides={"run.max_steps": 7}, base={"model": {"preset": "nano"}, "optim": {"lr": 1e-3}})
    assert (c.model.preset, c.optim.lr, c.run.max_steps) == ("nano", 1e-3, 7)
    steps = resolve_config(overrides={"distill.kind": "steps", "distill.teacher": "t", "distill.teacher_steps": 40,
                                      "optim.sample_steps": 20})
    assert steps.distill.teacher_steps == 40


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-6, 1.0), batch=st.integers(1, 512), steps=st.integers(1, 10**6), ema=st.booleans(),
       gamma=st.floats(0.1, 20.0), weighting=st.sampled_from(["uniform", "min-snr"]))
def test_any_valid_config_survives_its_own_toml(tmp_path_factory, lr, batch, steps, ema, gamma, weighting):
    from greendiff.train import resolve_config, to_toml

    config = resolve_config(overrides={"optim.lr": lr, "optim.batch_size": batch, "run.max_steps": steps, "optim.ema": ema,
                                       "optim.snr_gamma": gamma, "optim.loss_weighting": weighting})
    path = tmp_path_factory.mktemp("c") / "config.toml"
    path.write_text(to_toml(config))
    assert resolve_config(path) == config


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(["optim.lr", "optim.batch_size", "run.max_steps", "optim.ema", "optim.loss_weighting",
                            "model.block_out_channels", "stop.budget_kwh", "carbon.deadline", "run.log_to"]),
       value=st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                       st.lists(st.integers(-5, 5), max_size=3)))
def test_any_bad_value_is_a_user_error_never_a_crash(key, value):
    from greendiff.errors import UserInputError
    from greendiff.train import resolve_config

    try:
        resolve_config(overrides={key: value})
    except UserInputError as exc:
        assert "\n" not in str(exc) and str(exc)


# -- issue 18: every value at its extremes, one validation layer ----------------------------------------

import dataclasses  # noqa: E402
import typing  # noqa: E402

from greendiff.numbers import MAX_COUNT, MAX_SEED  # noqa: E402
from greendiff.train import TrainConfig  # noqa: E402


def _leaves(obj=TrainConfig(), prefix=""):
    """(dotted key, field, type hint) of every setting."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


NUMERIC = [(key, f) for key, f, hint in _leaves() if hint in (int, float) or hint == tuple[int, ...]]
STRINGS = [key for key, _, hint in _leaves() if hint is str]


def test_every_numeric_key_has_a_range():
    """A new int or float setting without bounds fails here, so no key escapes the range check."""
    assert len(NUMERIC) > 40
    assert [key for key, f in NUMERIC if "bounds" not in f.metadata] == []


@pytest.mark.parametrize(("key", "f"), NUMERIC, ids=[k for k, _ in NUMERIC])
def test_every_numeric_key_refuses_overflow_nan_and_malformed_numbers(key, f):
    integer = f.metadata["bounds"].integer
    bad = ["99999999999999999999", "٣", "１０", "1_000", "0x10", " 5", "--5"] if integer else \
        ["nan", "inf", "-inf", "1e400", "1e308", "٣.5", "1,5"]
    for value in bad:
        if value == " 5" and key == "model.block_out_channels":
            continue  # a list: "8, 16" may have spaces around its commas
        if value == "1e308" and f.metadata["bounds"].hi is None:
            continue  # finite and unbounded above (a learning rate: divergence is the trainer's to report)
        with pytest.raises(UserInputError, match=re.escape(key)) as err:
            resolve_config(overrides={key: value})
        assert "\n" not in str(err.value)


def test_a_toml_integer_beyond_int64_and_a_bool_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[run]\nseed = 99999999999999999999\n")
    with pytest.raises(UserInputError, match=r"c\.toml: run\.seed must be >= 0 and at most 4294967295"):
        resolve_config(path)
    path.write_text("[optim]\nbatch_size = true\n")
    with pytest.raises(UserInputError, match="optim.batch_size must be an integer, got True"):
        resolve_config(path)


def test_a_float_that_underflows_to_zero_is_refused():
    """1e-400 reads as 0.0, which for the learning rate means 'the preset's': a typo must not switch it."""
    with pytest.raises(UserInputError, match="optim.lr '1e-400' is too small to represent"):
        resolve_config(overrides={"optim.lr": "1e-400"})
    assert resolve_config(overrides={"stop.min_delta": "0e5"}).stop.min_delta == 0.0


@pytest.mark.parametrize("value", ["٣", "３", "1_0", "0x1", "1e3", " 7", "7 ", "+", ""])
def test_integers_from_strings_are_ascii_digits_only(value):
    """Python's int() accepts Arabic-Indic and fullwidth digits, underscores and spaces; a config
    value typed on the command line is read as exactly the digits it shows."""
    with pytest.raises(UserInputError, match="run.max_steps must be an integer"):
        resolve_config(overrides={"run.max_steps": value})
    assert resolve_config(overrides={"run.max_steps": "+7"}).run.max_steps == 7


def test_derived_seeds_stay_in_range_at_the_extremes():
    """The largest seed and step the config accepts keep every seed the trainer derives from them inside
    torch's generator range (a seed of 10**20 overflowed torch.manual_seed)."""
    import torch

    from greendiff.data import batch_indices
    from greendiff.train._step import step_generator

    assert resolve_config(overrides={"run.seed": str(MAX_SEED), "run.max_steps": MAX_COUNT}).run.seed == MAX_SEED
    with pytest.raises(UserInputError, match="run.seed must be >= 0 and at most 4294967295"):
        resolve_config(overrides={"run.seed": MAX_SEED + 1})
    batch_indices(MAX_COUNT, 10, 1, MAX_SEED)
    step_generator(MAX_SEED + 1_000_003 * 1024, MAX_COUNT)
    for derived in (MAX_SEED + 12_345, MAX_SEED + 54_321 + 100 + 7_777 * 1024):
        torch.Generator().manual_seed(derived)


@pytest.mark.parametrize("key", STRINGS)
@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "esc\x1b[2J", "rtl\u202eexe", "x" * 5000])
def test_every_string_key_refuses_nul_control_characters_and_huge_values(key, bad):
    with pytest.raises(UserInputError, match=re.escape(key)) as err:
        resolve_config(overrides={key: bad})
    assert str(err.value).isprintable() and len(str(err.value)) < 400


@pytest.mark.parametrize("text", [
    "[run]\nmax_steps = " + "[" * 10_000 + "]" * 10_000 + "\n",
    "run = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n",
])
def test_deeply_nested_toml_is_one_line(tmp_path, text):
    (tmp_path / "deep.toml").write_text(text)
    with pytest.raises(UserInputError, match=r"deep\.toml: invalid TOML: .*nested too deeply"):
        resolve_config(tmp_path / "deep.toml")


def test_nested_values_are_shown_short_in_messages(tmp_path):
    (tmp_path / "c.toml").write_text("[run]\nmax_steps = " + "[" * 300 + "1" + "]" * 300 + "\n")
    with pytest.raises(UserInputError, match=r"run.max_steps must be an integer, got \[+\.\.\.\]+") as err:
        resolve_config(tmp_path / "c.toml")
    assert len(str(err.value)) < 200


@pytest.mark.parametrize(("text", "hint"), [
    ("[Run]\nmax_steps = 5\n", "did you mean 'run'?"),
    ("[run]\nMax_Steps = 5\n", "did you mean 'run.max_steps'?"),
    ("[optim]\nbatch-size = 5\n", "did you mean 'optim.batch_size'?"),
])
def test_keys_in_the_wrong_case_are_named_with_the_right_one(tmp_path, text, hint):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(UserInputError, match=re.escape(hint)):
        resolve_config(tmp_path / "c.toml")


@pytest.mark.parametrize("name", ["old:run", "wow!", "x" * 150, "20240101-120000-pruned0.5-" + "p" * 90])
def test_a_saved_run_name_is_read_as_it_is(tmp_path, name):
    """run.name is checked where a new run directory is made from it (tests/cli/test_train_cli.py), not each time
    a config is read: an older run's config.toml, or a derived run's, stays readable whatever its name."""
    (tmp_path / "config.toml").write_text(f'[run]\nname = "{name}"\n')
    assert resolve_config(tmp_path / "config.toml").run.name == name
    assert resolve_config(overrides={"run.name": name}).run.name == name
    with pytest.raises(UserInputError, match="run.name.*unprintable character"):  # the rule of every config string
        resolve_config(overrides={"run.name": "a\x00b"})


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("carbon.deadline", "0001-01-01T00:00+01:00", "0001-01-01T00:00:00+01:00"),  # the zone offset overflowed
    ("carbon.deadline", "0005-06-01T00:00", "0005-06-01T00:00:00+00:00"),  # was accepted
    ("carbon.deadline", "2200-01-01T00:00", "2200-01-01T00:00:00+00:00"),
    ("carbon.simulate_start", "9999-12-31T23:00-05:00", "9999-12-31T23:00:00-05:00"),
    ("carbon.simulate_start", "1899-12-31T23:59:59Z", "1899-12-31T23:59:59+00:00"),
])
def test_config_times_are_inside_the_supported_years(key, value, shown):
    """Every time a user gives is read by parse_utc, which holds the 1900-2199 rule (no OverflowError)."""
    overrides = {key: value, "carbon.simulated_step_s": 1.0} if key == "carbon.simulate_start" else {key: value}
    with pytest.raises(UserInputError) as err:
        resolve_config(overrides=overrides)
    assert str(err.value) == f"{key} {shown} is outside the years greendiff handles (1900 to 2199, UTC)"


def test_parse_utc_reads_zones_and_the_edges_of_the_supported_years():
    from datetime import datetime, timezone

    from greendiff.train import parse_utc

    assert parse_utc("2022-06-01T02:00+02:00", "--deadline") == datetime(2022, 6, 1, tzinfo=timezone.utc)
    assert parse_utc("1900-01-01T00:00", "t") == datetime(1900, 1, 1, tzinfo=timezone.utc)
    assert parse_utc("2199-12-31T23:59:59Z", "t") == datetime(2199, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    with pytest.raises(UserInputError, match=r"^--simulate-clock 0001-01-01T00:00:00\+01:00 is outside the years"):
        parse_utc("0001-01-01T00:00+01:00", "--simulate-clock")
    with pytest.raises(UserInputError, match=r"^--deadline 'x' is not a date and time"):
        parse_utc("x", "--deadline")


@pytest.mark.parametrize(("array", "wrong"), [('[16, "32"]', "'32'"), ("[16, true]", "True"), ("[16, 3.0]", "3.0")])
def test_a_toml_list_of_integers_holds_only_integers(tmp_path, array, wrong):
    path = tmp_path / "c.toml"
    path.write_text(f"[model]\nblock_out_channels = {array}\n")
    with pytest.raises(UserInputError, match="must be a list of integers; the item " + re.escape(wrong)):
        resolve_config(file=path)
    path.write_text("[model]\nblock_out_channels = [16, 32]\n")
    assert resolve_config(file=path).model.block_out_channels == (16, 32)
    assert resolve_config(overrides={"run.log_to": ""}).run.log_to == ()  # an empty list of names: none


def test_conditioning_and_data_keys_resolve_and_round_trip(tmp_path):
    config = resolve_config(overrides={"model.conditioning": "class", "optim.cond_dropout": "0.2",
                                       "optim.guidance_scale": "4", "data.label_column": "digit",
                                       "data.cache_max_gb": "0.5", "data.loader_workers": "3"})
    assert (config.model.conditioning, config.model.num_classes) == ("class", 0)
    assert (config.optim.cond_dropout, config.optim.guidance_scale) == (0.2, 4.0)
    assert (config.data.label_column, config.data.cache_max_gb, config.data.loader_workers) == ("digit", 0.5, 3)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert resolve_config(path) == config
    assert resolve_config().model.conditioning == "none"  # unconditional stays the default
    assert resolve_config().optim.cond_dropout == 0.1


@pytest.mark.parametrize("overrides, message", [
    ({"model.num_classes": "10"}, "needs model.conditioning = class"),
    ({"model.conditioning": "label"}, "model.conditioning must be one of none, class"),
    ({"model.conditioning": "class", "distill.kind": "output", "distill.teacher": "t"},
     "^distill.kind = output trains unconditional students only, and model.conditioning is class: set "
     "model.conditioning = none \\(--conditioning none\\) or distill.kind = none$"),
    ({"optim.cond_dropout": "1.5"}, "optim.cond_dropout"),
    ({"optim.guidance_scale": "nan"}, "optim.guidance_scale"),
    ({"data.cache_max_gb": "-1"}, "data.cache_max_gb"),
])
def test_bad_conditioning_keys_are_one_line_errors(overrides, message):
    with pytest.raises(UserInputError, match=message) as info:
        resolve_config(overrides=overrides)
    assert "\n" not in str(info.value)


def test_a_class_conditional_run_may_start_from_a_saved_unet():
    """model.init_from with model.conditioning = class (prune's fine-tuning of a class-conditional run): the weights
    are checked against the class-conditional UNet by check_init_from / load_weights, not refused by the config."""
    config = resolve_config(overrides={"model.conditioning": "class", "model.init_from": "pruned-unet"})
    assert (config.model.conditioning, config.model.init_from) == ("class", "pruned-unet")


def test_an_older_config_s_prediction_type_reads_as_the_objective(tmp_path):
    from greendiff.train import resolve_config

    old = tmp_path / "config.toml"
    old.write_text('[optim]\nprediction_type = "v_prediction"\n')
    assert resolve_config(old).optim.objective == "v" and resolve_config(old).optim.prediction_type == "v_prediction"
    assert resolve_config(None, {"optim.prediction_type": "epsilon"}).optim.objective == "epsilon"
    both = tmp_path / "both.toml"
    both.write_text('[optim]\nprediction_type = "epsilon"\nobjective = "flow"\n')
    with pytest.raises(UserInputError, match=r"both.toml: optim.prediction_type is the old name of optim.objective"):
        resolve_config(both)
    with pytest.raises(UserInputError, match="must be one of epsilon, v_prediction; got 'flow'"):
        resolve_config(None, {"optim.prediction_type": "flow"})


def test_a_checkpoint_of_an_older_version_still_matches_its_config():
    """A checkpoint's fingerprint written before optim.objective and the latent keys existed: the old name reads
    as the new one and the keys added since take their defaults, so the run resumes."""
    from pathlib import Path

    from greendiff.train._checkpoint import _flat, fingerprint
    from greendiff.train._checkpoint_read import _check_fingerprint
    from greendiff.train import resolve_config

    config = resolve_config(None, {})
    expected = fingerprint(config, 1)
    saved = {**expected, "config": {k: v for k, v in expected["config"].items()
                                    if k not in ("optim.objective", "model.backbone", "model.vae", "model.patch_size",
                                                 "optim.flow_logit_mean", "optim.flow_logit_std")}}
    saved["config"]["optim.prediction_type"] = "epsilon"
    _check_fingerprint(Path("step-4"), saved, expected, "config")  # no error
    saved["config"]["optim.prediction_type"] = "v_prediction"
    with pytest.raises(UserInputError, match="optim.objective v -> epsilon"):
        _check_fingerprint(Path("step-4"), saved, expected, "config")
    assert "optim.objective" in _flat({"optim": {"objective": "v"}})
