"""YAML configuration of ``lq compress``: which variables to quantize, and how finely.

A config file is a YAML mapping; every key is optional and command-line options override it.

.. code-block:: yaml

    description: WeatherBench2 ERA5, 6-hourly, 0.25 degree   # free text, ignored
    nbits: 16             # default bits for every quantized variable (1..24), or instead
    # tolerance: 0.01     # a default absolute error, in each variable's own units, or
    # precision: source   # keep the packing grid each variable's source values sit on
    zarr_format: 2        # 2 (default) or 3
    chunks: {time: 1}     # output chunk size per dimension; -1 = the whole dimension
    shards: {time: 28}    # Zarr v3 only: shards of 28 chunks of one step (one object each)
    time: "2020-01-01:2020-12-31"   # subset of the time coordinate, START:END (inclusive)
    levels: [500, 850]    # subset of the level coordinate
    on_missing: error     # error (default) or skip: what to do with a listed variable
                          # that the source does not have
    drop: [total_precipitation_24hr]   # data variables not written at all
    copy: [land_sea_mask]   # data variables copied losslessly, named so that a config
                            # can give every variable of a store its treatment
    variables:            # the variables to quantize; all other data variables are
      temperature:        # copied losslessly
      specific_humidity: {nbits: 20}
      geopotential: {tolerance: 1.0}   # within 1 m**2 s**-2 (+ one float32 ulp)
      2m_temperature: {precision: source}   # every value back on the source's grid

A variable takes its own ``nbits``, ``tolerance`` or ``precision`` (one of them), else the
default ``nbits``, ``tolerance`` or ``precision`` (one of them), else 16 bits. ``nbits``
bounds the error relative to each layer's max - min; ``tolerance`` in the variable's units,
whatever its range. ``precision: source`` (the only value ``precision`` takes) keeps what
the source had: ``lq compress`` reads a few sampled chunks of the variable, finds the grid
step ``g`` its values sit on (the packing of GRIB or netCDF: ERA5 temperature on 2**-9 K,
geopotential on 0.125 m**2 s**-2), and compresses with the tolerance ``g / 2``, so that
every value on that grid comes back exactly; a variable with no such grid in its sample is
refused before anything is written. A layer outside the sample that sits on a finer grid
(or on none) still keeps the bound ``g / 2`` (+ one float32 ulp), but its values are
exact only where they lie on the grid of step ``g``.

Example
-------
>>> cfg = parse_config({"nbits": 12, "variables": {"temperature": None}}, source="inline")
>>> cfg.nbits_for("temperature"), cfg.nbits_for("geopotential")
(12, 12)
>>> cfg = parse_config({"tolerance": 0.5, "variables": {"t": {"nbits": 14}, "z": None}})
>>> cfg.setting_for("t"), cfg.setting_for("z")
((14, None), (None, 0.5))
>>> cfg = parse_config({"precision": "source", "variables": {"t": {"nbits": 14}, "z": None}})
>>> cfg.precision_for("t"), cfg.precision_for("z"), cfg.setting_for("z")
(None, 'source', (None, None))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PRECISION_SOURCE",
    "Config",
    "ConfigError",
    "VariableConfig",
    "load_config",
    "parse_config",
]

_TOP_KEYS = (
    "description",
    "nbits",
    "tolerance",
    "precision",
    "zarr_format",
    "chunks",
    "shards",
    "time",
    "levels",
    "on_missing",
    "drop",
    "variables",
    "copy",
)
_VARIABLE_KEYS = ("nbits", "tolerance", "precision")
_ON_MISSING = ("error", "skip")
#: The values of ``precision``: ``source`` keeps the packing grid of the source's values.
PRECISION_SOURCE = "source"
_PRECISIONS = (PRECISION_SOURCE,)


class ConfigError(ValueError):
    """A config file that cannot be read or does not follow the schema; names file and key."""


@dataclasses.dataclass(frozen=True)
class VariableConfig:
    """Settings of one quantized variable (at most one of the three); ``None`` means the
    config's default."""

    nbits: int | None = None
    tolerance: float | None = None
    precision: str | None = None


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated ``lq`` config. Every field is optional; see the module docstring."""

    variables: Mapping[str, VariableConfig] = dataclasses.field(default_factory=dict)
    nbits: int | None = None
    tolerance: float | None = None
    precision: str | None = None
    zarr_format: int | None = None
    chunks: Mapping[str, int] = dataclasses.field(default_factory=dict)
    shards: Mapping[str, int] = dataclasses.field(default_factory=dict)
    time: str | None = None
    levels: tuple[float, ...] | None = None
    on_missing: str = "error"
    drop: tuple[str, ...] = ()
    copy: tuple[str, ...] = ()
    description: str | None = None
    source: str = "<config>"

    def _own_or_default(self, name: str) -> VariableConfig:
        own = self.variables.get(name)
        if own is not None and (
            own.nbits is not None or own.tolerance is not None or own.precision is not None
        ):
            return own
        return VariableConfig(self.nbits, self.tolerance, self.precision)

    def setting_for(self, name: str) -> tuple[int | None, float | None]:
        """``(nbits, tolerance)`` of variable ``name``, at most one not None: its own
        setting, else the config's default, else ``(None, None)`` (also when its setting
        is ``precision``, see :meth:`precision_for`)."""
        chosen = self._own_or_default(name)
        return chosen.nbits, chosen.tolerance

    def precision_for(self, name: str) -> str | None:
        """``"source"`` when variable ``name`` keeps the source's packing grid (its own
        ``precision``, or the default one when it sets nothing), else None."""
        return self._own_or_default(name).precision

    def nbits_for(self, name: str) -> int | None:
        """Bits for variable ``name`` (None when the config gives it a tolerance or nothing)."""
        return self.setting_for(name)[0]

    def tolerance_for(self, name: str) -> float | None:
        """Absolute tolerance for variable ``name``, in its units (None when not set)."""
        return self.setting_for(name)[1]


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key!r} {message}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(data: Mapping, allowed: tuple[str, ...], where: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            place = f" in {where!r}" if where else ""
            raise ConfigError(
                f"{source}: unknown key {key!r}{place} (expected one of: {', '.join(allowed)})"
            )


def _integer(value: Any, key: str, source: str, *, low: int, high: int | None = None) -> int:
    # bool is an int subclass; YAML's `yes` must not pass for 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(source, key, f"must be an integer, got {_type_name(value)} {value!r}")
    if value < low or (high is not None and value > high):
        upper = f"..{high}" if high is not None else " or more"
        raise _fail(source, key, f"must be in {low}{upper}, got {value}")
    return value


def _tolerance(value: Any, key: str, source: str) -> float:
    # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as text: say how to write it.
    if isinstance(value, str):
        hint = ""
        try:
            float(value)
            hint = " (YAML reads a number like 1e-3 as text: write 1.0e-3 or 0.001)"
        except ValueError:
            pass
        raise _fail(source, key, f"must be a number, got text {value!r}{hint}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, key, f"must be a number, got {_type_name(value)} {value!r}")
    if not (value > 0 and math.isfinite(2.0 * float(value))):
        raise _fail(
            source, key, f"must be a positive, finite number (an absolute error), got {value!r}"
        )
    return float(value)


def _precision(value: Any, key: str, source: str) -> str:
    if value not in _PRECISIONS:
        raise _fail(
            source,
            key,
            f"must be {' or '.join(_PRECISIONS)} (keep the source's packing "
            f"grid), got {value!r}; for a bound of your own give nbits or tolerance",
        )
    return value


def _exclusive(settings: Mapping, where: str, source: str) -> None:
    given = [key for key in ("nbits", "tolerance", "precision") if settings.get(key) is not None]
    if len(given) > 1:
        key = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: {' and '.join(key + name for name in given)} are "
            f"{'both' if len(given) == 2 else 'all'} given; keep one "
            "(nbits bounds the error relative to each layer's range, tolerance in the "
            "variable's units, precision: source keeps the source's packing grid)"
        )


def _string_list(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, key, f"must be a list of names, got {_type_name(value)} {value!r}")
    return tuple(value)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate a parsed YAML document against the schema and return a :class:`Config`.

    Parameters
    ----------
    data : Any
        The document, as ``yaml.safe_load`` returns it; ``None`` (an empty file) is allowed.
    source : str
        Name of the file, used in error messages.

    Raises
    ------
    ConfigError
        On an unknown key or a value of the wrong type or range; the message names the
        file and the key.
    """
    if data is None:
        return Config(source=source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping of keys to values, got {_type_name(data)}")
    _check_keys(data, _TOP_KEYS, "", source)
    fields: dict[str, Any] = {"source": source}

    if "description" in data and data["description"] is not None:
        if not isinstance(data["description"], str):
            raise _fail(
                source, "description", f"must be text, got {_type_name(data['description'])}"
            )
        fields["description"] = data["description"]
    if data.get("nbits") is not None:
        fields["nbits"] = _integer(data["nbits"], "nbits", source, low=1, high=24)
    if data.get("tolerance") is not None:
        fields["tolerance"] = _tolerance(data["tolerance"], "tolerance", source)
    if data.get("precision") is not None:
        fields["precision"] = _precision(data["precision"], "precision", source)
    _exclusive(data, "", source)
    if data.get("zarr_format") is not None:
        value = data["zarr_format"]
        if isinstance(value, bool) or value not in (2, 3):
            raise _fail(source, "zarr_format", f"must be 2 or 3, got {value!r}")
        fields["zarr_format"] = value
    for key in ("chunks", "shards"):  # both: size per dimension, -1 = the whole dimension
        if data.get(key) is None:
            continue
        sizes = data[key]
        if not isinstance(sizes, Mapping):
            raise _fail(source, key, f"must be a mapping of dimension to size, got {sizes!r}")
        parsed = {}
        for dim, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size == 0 or size < -1:
                raise _fail(
                    source, f"{key}.{dim}", f"must be a positive integer or -1, got {size!r}"
                )
            parsed[str(dim)] = size
        fields[key] = parsed
    if data.get("time") is not None:
        if not isinstance(data["time"], str):
            raise _fail(source, "time", f"must be text START:END, got {_type_name(data['time'])}")
        fields["time"] = data["time"]
    if data.get("levels") is not None:
        levels = data["levels"]
        if (
            not isinstance(levels, list)
            or not levels
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels)
        ):
            raise _fail(source, "levels", f"must be a non-empty list of numbers, got {levels!r}")
        fields["levels"] = tuple(levels)
    if data.get("on_missing") is not None:
        if data["on_missing"] not in _ON_MISSING:
            raise _fail(source, "on_missing", f"must be error or skip, got {data['on_missing']!r}")
        fields["on_missing"] = data["on_missing"]
    if data.get("drop") is not None:
        fields["drop"] = _string_list(data["drop"], "drop", source)
    if data.get("copy") is not None:
        fields["copy"] = _string_list(data["copy"], "copy", source)
        both = sorted(set(fields["copy"]) & set(fields.get("drop", ())))
        if both:
            raise _fail(source, "copy", f"lists variables that 'drop' leaves out: {both}")

    variables = data.get("variables")
    if variables is not None:
        if not isinstance(variables, Mapping):
            raise _fail(source, "variables", f"must be a mapping of names, got {variables!r}")
        parsed_vars = {}
        for name, settings in variables.items():
            where = f"variables.{name}"
            if settings is None:
                parsed_vars[str(name)] = VariableConfig()
                continue
            if not isinstance(settings, Mapping):
                raise _fail(
                    source,
                    where,
                    f"must be a mapping such as {{nbits: 16}}, {{tolerance: 0.01}} or "
                    f"{{precision: source}}, got {settings!r}",
                )
            _check_keys(settings, _VARIABLE_KEYS, where, source)
            nbits, tolerance = settings.get("nbits"), settings.get("tolerance")
            if nbits is not None:
                nbits = _integer(nbits, f"{where}.nbits", source, low=1, high=24)
            if tolerance is not None:
                tolerance = _tolerance(tolerance, f"{where}.tolerance", source)
            precision = settings.get("precision")
            if precision is not None:
                precision = _precision(precision, f"{where}.precision", source)
            _exclusive(settings, where, source)
            parsed_vars[str(name)] = VariableConfig(
                nbits=nbits, tolerance=tolerance, precision=precision
            )
        fields["variables"] = parsed_vars
        overlap = sorted(set(parsed_vars) & set(fields.get("drop", ())))
        if overlap:
            raise _fail(source, "drop", f"lists variables that 'variables' quantizes: {overlap}")
        overlap = sorted(set(parsed_vars) & set(fields.get("copy", ())))
        if overlap:
            raise _fail(source, "copy", f"lists variables that 'variables' quantizes: {overlap}")
    return Config(**fields)


class DuplicateKeyError(ValueError):
    """A YAML mapping names a key twice (YAML's loaders keep the last one silently)."""


def _unique_key_loader():
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        f"line {key_node.start_mark.line + 1}: key {key!r} given twice (first "
                        f"on line {first}); keep one"
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "my.yaml"
    >>> _ = path.write_text("nbits: 14\\nvariables: {temperature: , ozone: {nbits: 20}}")
    >>> cfg = load_config(path)
    >>> cfg.nbits_for("temperature"), cfg.nbits_for("ozone")
    (14, 20)
    """
    import yaml  # only the CLI's config path needs PyYAML

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        detail = str(exc).replace("\n", " ")
        raise ConfigError(f"{path}: not valid YAML: {detail}") from exc
    return parse_config(data, source=str(path))
