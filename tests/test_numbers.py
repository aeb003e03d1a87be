"""The one number grammar (``greendiff.numbers``) at its extremes: numbers too long to read."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import get_type_hints

import pytest

from greendiff.cli._app import main
from greendiff.errors import UserInputError
from greendiff.numbers import MAX_FLOAT_CHARS, MAX_INT_DIGITS, SEED, Bounds, parse_float, parse_int
from greendiff.train import TrainConfig, resolve_config
from tests.cli.test_bad_inputs import NUMERIC_PARAMETERS

HUGE_INT = "1" * 5000  # past Python's int-string limit (4,300 digits): int() raises ValueError
HUGE_FLOAT = "0." + "0" * 4998 + "1"


def test_number_texts_over_the_length_limit_are_refused_before_conversion():
    assert parse_int("9" * MAX_INT_DIGITS, "n") == int("9" * MAX_INT_DIGITS)
    with pytest.raises(UserInputError, match=r"^--seed has too many digits \(5,000; at most 40\), got '1111"):
        SEED.parse(HUGE_INT, "--seed")
    with pytest.raises(UserInputError, match=r"^n has too many digits \(41; at most 40\)"):
        parse_int("-" + "1" * 41, "n")
    assert parse_float("1." + "0" * (MAX_FLOAT_CHARS - 2), "x") == 1.0
    for text in (HUGE_FLOAT, HUGE_INT, HUGE_INT + ".5"):
        with pytest.raises(UserInputError, match=r"^--lr has too many digits \(5,00\d characters; at most 100\)"):
            Bounds(lo=0).parse(text, "--lr")


@pytest.mark.parametrize(("path", "param"), NUMERIC_PARAMETERS,
                         ids=[f"{' '.join(p)} {q.opts[0]}" for p, q in NUMERIC_PARAMETERS])
def test_every_numeric_flag_refuses_a_5000_digit_value_in_one_line(path, param):
    from greendiff.cli._options import FlagError

    parse = param.type_descriptor.parameter_info.parser
    for value in (HUGE_INT, HUGE_FLOAT):
        with pytest.raises(FlagError) as caught:
            parse(value)
        message = str(caught.value)
        assert "\n" not in message and len(message) < 300, message
        assert "too many digits" in message or value == HUGE_FLOAT and "must be an integer" in message, message


def _numeric_keys(obj, prefix=""):
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from _numeric_keys(value, f"{prefix}{f.name}.")
        elif hints[f.name] in (int, float, tuple[int, ...]):
            yield f"{prefix}{f.name}", hints[f.name]


NUMERIC_KEYS = list(_numeric_keys(TrainConfig()))


@pytest.mark.parametrize(("key", "hint"), NUMERIC_KEYS, ids=[k for k, _ in NUMERIC_KEYS])
def test_every_numeric_config_key_refuses_a_5000_digit_value_in_one_line(key, hint):
    assert len(NUMERIC_KEYS) > 40
    for value in (HUGE_INT, HUGE_FLOAT) if hint is float else (HUGE_INT,):
        with pytest.raises(UserInputError) as caught:
            resolve_config(overrides={key: value})
        message = str(caught.value)
        assert message.startswith(f"{key} has too many digits") and "\n" not in message, message


@pytest.mark.parametrize("argv", [
    ["train", "--set", f"run.seed={HUGE_INT}", "--dry-run"],
    ["train", "--seed", HUGE_INT, "--dry-run"],
    ["measure", "--gpus", HUGE_INT, "--", "true"],
    ["plan", "window", "--energy-kwh", HUGE_FLOAT, "--hours", "1", "--grid", "CISO"],
], ids=["train --set run.seed", "train --seed", "measure --gpus", "plan window --energy-kwh"])
def test_a_5000_digit_number_on_the_command_line_is_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("greendiff: error: ") and len(err) < 300, err
    assert "too many digits" in err and "Traceback" not in out + err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("raw", "message"), [
    ("9" * 5000, "GREENDIFF_THREADS has too many digits"),  # int() raised ValueError past 4,300 digits
    ("٣", "GREENDIFF_THREADS must be a number of threads (1-4096) or 'all', got '٣' (use the ASCII digits 0-9)"),
    ("1_0", "GREENDIFF_THREADS must be a number of threads (1-4096) or 'all', got '1_0' (write it without '_')"),
    ("4097", "GREENDIFF_THREADS must be a number of threads (1-4096) or 'all', got '4097'"),
    ("0", "GREENDIFF_THREADS must be a number of threads (1-4096) or 'all', got '0'"),
])
def test_the_thread_variable_is_read_by_the_one_number_grammar(raw, message):
    from greendiff.parallel import thread_setting

    assert thread_setting({"GREENDIFF_THREADS": "+3"}) == 3 and thread_setting({"GREENDIFF_THREADS": "ALL"}) == "all"
    with pytest.raises(UserInputError) as err:
        thread_setting({"GREENDIFF_THREADS": raw})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_each_limit_is_one_constant():
    """Limits kept in two places drift apart; each is defined once and imported where it is used."""
    from datetime import timedelta

    import greendiff.cli._app as app
    import greendiff.cli._options as options
    import greendiff.cli._plan as plan
    import greendiff.ledger._records as records
    import greendiff.train._config as config
    from greendiff import carbon, ledger, numbers

    assert ledger.MAX_RUN_ID is numbers.MAX_ROW_ID
    assert records._MAX_UNIX_S == carbon.LATEST_SUPPORTED.timestamp()
    assert not hasattr(numbers, "MAX_INTENSITY_G_PER_KWH")
    assert config.CarbonAwareConfig.__dataclass_fields__["max_intensity"].metadata["bounds"].hi == carbon.MAX_PLAUSIBLE_G_PER_KWH
    assert plan.MAX_WINDOW == timedelta(hours=numbers.HOURS_IN_A_YEAR) and options.YEAR_HOURS is numbers.YEAR_HOURS
    assert config._MINUTES_IN_A_YEAR == numbers.HOURS_IN_A_YEAR * 60 and not hasattr(options, "HOURS_IN_A_YEAR")
    assert app._UsageError is options._UsageError


def test_max_slowdown_has_one_range_and_one_message(capsys, tmp_path, monkeypatch):
    """--max-slowdown 10 passed the flag's range ('at most 10') and was then refused by a second check."""
    monkeypatch.chdir(tmp_path)
    code = main(["hardware", "--max-slowdown", "10"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("greendiff: error: --max-slowdown must be a fraction >= 0 (0.1 = 10 %), below 10, "
                                 "got '10' (see 'greendiff hardware --help')\n"), err
