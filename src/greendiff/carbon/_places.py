"""Where a run was priced, in words: the one place-name function (statements, model cards, exports, notes).

The names come from the tables that price the place, never from a second list: countries from the country
table (:func:`~greendiff.carbon._static.iso3_of` for a name), cloud regions from the cloud-region table and
:data:`~greendiff.carbon._location.CLOUD_NAMES`, US grids from :data:`~greendiff.carbon._trace.BUNDLED_GRIDS`.

Example:
    >>> place_name({"country": "FRA"}), place_name({"grid": "CISO"})
    ('France', 'California (grid CISO), United States')
    >>> place_name(Location(cloud="gcp:europe-west1"), with_code=True)
    'Google Cloud europe-west1 (Belgium; gcp:europe-west1)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from greendiff.carbon._location import CLOUD_NAMES, Location
from greendiff.carbon._static import cloud_table, country_table, iso3_of
from greendiff.carbon._trace import BUNDLED_GRIDS
from greendiff.names import display_path


def _fields(location: Location | Mapping | None) -> tuple[str, str, str]:
    """``(country, cloud, grid)`` of a :class:`Location` or of a stored location (a summary's ``location``)."""
    if location is None:
        return "", "", ""
    if isinstance(location, Location):
        return location.country or "", location.cloud or "", location.grid or ""
    return tuple(str(location.get(k) or "") for k in ("country", "cloud", "grid"))  # type: ignore[return-value]


def _country(text: str) -> tuple[str, str]:
    """``(name, ISO-3 code)`` of a country given by code or by name; the text itself (no code) when unknown."""
    if not text:
        return "", ""
    row = country_table().get(text.upper())
    if row is not None:
        return row.name, row.key
    code = iso3_of(text) or ""
    row = country_table().get(code)
    return (row.name if row is not None else text), code


def country_of(location: Location | Mapping | None) -> tuple[str, str]:
    """``(country name, ISO-3 code)`` of a location: its country, else its cloud region's, else the United
    States for a bundled US grid; ``("", "")`` when none is known.

    Example:
        >>> country_of({"cloud": "gcp:europe-west1"}), country_of({"grid": "pjm"}), country_of(Location())
        (('Belgium', 'BEL'), ('United States', 'USA'), ('', ''))
    """
    country, cloud, grid = _fields(location)
    if country:
        return _country(country)
    row = cloud_table().get(cloud.lower())
    if row is not None and row.country:
        return _country(row.country)
    if grid.upper() in BUNDLED_GRIDS:
        return _country("USA")
    return "", ""


def _cloud_place(cloud: str) -> str:
    provider, _, region = cloud.partition(":")
    name = f"{CLOUD_NAMES.get(provider.lower(), provider)} {region}"
    row = cloud_table().get(cloud.lower())
    if row is None:
        return name
    where = row.name
    country = _country(row.country)[0] if row.country else ""
    if country and country not in where and row.country not in where:
        where = f"{where}, {country}"
    return f"{name} ({where})"


def _grid_place(grid: str) -> str:
    region = BUNDLED_GRIDS.get(grid.upper())
    if region is not None:
        return f"{region} (grid {grid.upper()}), United States"
    return f"the grid of intensity trace {Path(grid).name}"


def _code(country: str, cloud: str, grid: str) -> str:
    """What ``--country``, ``--cloud`` or ``--grid`` takes for the most specific part (a grid file: its path)."""
    if grid:
        return grid.upper() if grid.upper() in BUNDLED_GRIDS else display_path(Path(grid))
    return cloud or country.upper()


def _with_code(name: str, code: str) -> str:
    """``name`` with ``code`` in its parentheses, unless a word of the name is the code already."""
    if re.search(rf"(?<![\w:/.]){re.escape(code)}(?![\w:/.])", name, re.IGNORECASE):
        return name
    return f"{name[:-1]}; {code})" if name.endswith(")") else f"{name} ({code})"


def place_name(location: Location | Mapping | None, with_code: bool = False) -> str:
    """Where a run was priced, in words: the most specific of its grid, cloud region and country (the one its
    intensity came from), ``"France"``, ``"Google Cloud europe-west1 (Belgium)"``; ``""`` when unknown.

    Args:
        location: A :class:`Location`, or a stored one (a mapping with ``country``/``cloud``/``grid``).
        with_code: Add the code that names the place (what ``--country``, ``--cloud`` or ``--grid`` take)
            where the name lacks it: ``"France (FRA)"``, ``"Google Cloud europe-west1 (Belgium; gcp:europe-west1)"``.
    """
    country, cloud, grid = _fields(location)
    if grid:
        place = _grid_place(grid)
    elif cloud:
        place = _cloud_place(cloud)
    else:
        place = country_of(location)[0]
    if grid or cloud:
        country_name = _country(country)[0]
        place = f"{place}, {country_name}" if country_name and country_name not in place else place
    if not place or not with_code:
        return place
    return _with_code(place, _code(country, cloud, grid))
