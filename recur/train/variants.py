"""The config argument every experiment takes after its config file's path
(``--config=experiments/lm/config.py:ptb_small,cell=gru,smoke``): comma-separated bare names
and ``key=value`` items, parsed one way for all experiments, with the same one-line errors."""

from collections.abc import Callable, Iterable


def parse_variant(
    arg: str | None,
    names: Iterable[str] = (),
    keys: dict[str, Callable[[str], object]] | None = None,
) -> dict[str, object]:
    """``"ptb_small,cell=gru,smoke"`` -> ``{"ptb_small": True, "cell": "gru", "smoke": True}``.

    Args:
      arg: the config argument (None or empty: no items).
      names: the bare names allowed besides ``smoke`` (always allowed: tiny, for tests).
      keys: ``key -> type`` of the ``key=value`` items allowed (``int``, ``str``, or ``bool``,
        which takes true/false).

    Raises:
      ValueError: one line naming an unknown item, a value of the wrong type, or an item
        given twice, and listing what is allowed.
    """
    names, keys = ("smoke", *names), keys or {}
    allowed = ", ".join([*names, *(f"{key}=..." for key in keys)])
    variant: dict[str, object] = {}
    for item in filter(None, (arg or "").split(",")):
        key, equals, value = item.partition("=")
        if (not equals and key not in names) or (equals and (key not in keys or not value)):
            raise ValueError(f"unknown config variant {item!r}; use {allowed}")
        if key in variant:
            raise ValueError(f"config variant {key!r} given twice in {arg!r}")
        variant[key] = _convert(key, value, keys[key]) if equals else True
    return variant


def _convert(key: str, value: str, kind: Callable[[str], object]) -> object:
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"config variant {key} needs true or false, got {value!r}")
        return value.lower() == "true"
    try:
        return kind(value)
    except ValueError:
        wanted = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise ValueError(f"config variant {key} needs {wanted}, got {value!r}") from None


def choose_one(variant: dict[str, object], names: Iterable[str], default: str) -> str:
    """The one of ``names`` that ``variant`` holds (``default`` when none).

    Raises:
      ValueError: when it holds several.
    """
    chosen = [name for name in names if variant.get(name)]
    if len(chosen) > 1:
        raise ValueError(f"config variants {' and '.join(chosen)} exclude each other; use one")
    return chosen[0] if chosen else default
