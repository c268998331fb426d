"""Turn a run's configuration variables (the environment) into validated `benchmark.train` flags.

Usage:
  python scripts/train_flags.py           # one `--flag=value` per line, for every variable that is set
  python scripts/train_flags.py --names   # the variable names it reads, one per line (RNN_TYPE, AMP, ...)

Every field `foo_bar` of benchmark.config.TrainConfig is configured by the environment variable FOO_BAR;
unset or empty means the training default. So a new training flag needs no shell change, and the shell
configs (config_<SYSTEM>.sh) cannot drift from the one dataclass that defines the flags.

Values are checked before anything runs: booleans must be exactly `true` or `false`, numbers must parse,
enumerations must be one of their choices, and the whole set must pass TrainConfig.validate(). A bad value
exits with status 2 and a message naming the variable, e.g. `AMP=':true': must be one of off|bf16|fp16`.
Only the standard library and benchmark.config are imported, so this runs without torch (dry runs).
"""
from dataclasses import fields
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmark.config import TrainConfig  # noqa: E402  (path set up above: runs as a plain script)


def variable_name(field_name):
    return field_name.upper()


def convert(field, text):
    """Text of one variable -> typed value; raises ValueError with the reason."""
    if field.type is bool:
        if text not in ("true", "false"):
            raise ValueError("must be exactly 'true' or 'false'")
        value = text == "true"
    elif field.type is int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError("must be an integer") from None
    elif field.type is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
    else:
        value = text
    choices = field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError("must be one of " + "|".join(str(c) for c in choices))
    return value


def flag_text(value):
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def resolve(environ):
    """environ -> list of `--flag=value`; raises ValueError('VAR=...: reason') on the first bad variable."""
    values, args = {}, []
    for field in fields(TrainConfig):
        name = variable_name(field.name)
        text = environ.get(name, "")
        if text == "":
            continue
        if "\n" in text:
            raise ValueError(f"{name}={text!r}: must be a single line")
        try:
            values[field.name] = convert(field, text)
        except ValueError as error:
            raise ValueError(f"{name}={text!r}: {error}") from None
        args.append(f"--{field.name}={flag_text(values[field.name])}")
    try:
        TrainConfig(**values).validate()
    except ValueError as error:
        # validate() names the flag (`--target_wer: ...`); say which variable sets it.
        message = str(error)
        if message.startswith("--"):
            flag, _, reason = message[2:].partition(":")
            message = f"{variable_name(flag)} (--{flag}):{reason}"
        raise ValueError(message) from None
    return args


def main(argv):
    if argv == ["--names"]:
        print("\n".join(variable_name(f.name) for f in fields(TrainConfig)))
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        args = resolve(os.environ)
    except ValueError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    print("\n".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
