"""Choose the intensity provider for a location: one decision, recorded."""

from __future__ import annotations

import os
from collections.abc import Mapping

from greendiff.carbon._intensity import IntensityProvider
from greendiff.carbon._live import (
    ELECTRICITYMAPS_BASE_URL,
    ENV_ELECTRICITYMAPS_TOKEN,
    UK_BASE_URL,
    ElectricityMapsProvider,
    UkCarbonIntensityProvider,
    check_zone,
)
from greendiff.carbon._location import Location
from greendiff.carbon._secrets import read_token
from greendiff.carbon._static import WorldAverageProvider, cloud_provider, country_provider, country_table
from greendiff.carbon._trace import BUNDLED_GRIDS, TraceProvider, load_trace
from greendiff.errors import UserInputError
from greendiff.numbers import Bounds

LIVE_CHOICES = ("none", "uk", "electricitymaps")
ENV_API_TIMEOUT = "GREENDIFF_API_TIMEOUT_S"
DEFAULT_API_TIMEOUT_S = 5.0
#: Longer than 10 minutes per request would stall a run's start (a fallback is always there).
API_TIMEOUT_S = Bounds(lo=0, lo_open=True, hi=600, phrase="seconds in (0, 600]")

#: ISO 3166-1 alpha-2 -> alpha-3, every assigned code (Debian iso-codes 4.18): an Electricity Maps zone key
#: starts with its country's alpha-2 code (``FR``, ``SE-SE3``, ``US-CAL-CISO``; ``GB`` is the United Kingdom's).
_ALPHA3 = {pair[:2]: pair[2:] for pair in """
ADAND AEARE AFAFG AGATG AIAIA ALALB AMARM AOAGO AQATA ARARG ASASM ATAUT AUAUS AWABW AXALA AZAZE BABIH BBBRB
BDBGD BEBEL BFBFA BGBGR BHBHR BIBDI BJBEN BLBLM BMBMU BNBRN BOBOL BQBES BRBRA BSBHS BTBTN BVBVT BWBWA BYBLR
BZBLZ CACAN CCCCK CDCOD CFCAF CGCOG CHCHE CICIV CKCOK CLCHL CMCMR CNCHN COCOL CRCRI CUCUB CVCPV CWCUW CXCXR
CYCYP CZCZE DEDEU DJDJI DKDNK DMDMA DODOM DZDZA ECECU EEEST EGEGY EHESH ERERI ESESP ETETH FIFIN FJFJI FKFLK
FMFSM FOFRO FRFRA GAGAB GBGBR GDGRD GEGEO GFGUF GGGGY GHGHA GIGIB GLGRL GMGMB GNGIN GPGLP GQGNQ GRGRC GSSGS
GTGTM GUGUM GWGNB GYGUY HKHKG HMHMD HNHND HRHRV HTHTI HUHUN IDIDN IEIRL ILISR IMIMN ININD IOIOT IQIRQ IRIRN
ISISL ITITA JEJEY JMJAM JOJOR JPJPN KEKEN KGKGZ KHKHM KIKIR KMCOM KNKNA KPPRK KRKOR KWKWT KYCYM KZKAZ LALAO
LBLBN LCLCA LILIE LKLKA LRLBR LSLSO LTLTU LULUX LVLVA LYLBY MAMAR MCMCO MDMDA MEMNE MFMAF MGMDG MHMHL MKMKD
MLMLI MMMMR MNMNG MOMAC MPMNP MQMTQ MRMRT MSMSR MTMLT MUMUS MVMDV MWMWI MXMEX MYMYS MZMOZ NANAM NCNCL NENER
NFNFK NGNGA NINIC NLNLD NONOR NPNPL NRNRU NUNIU NZNZL OMOMN PAPAN PEPER PFPYF PGPNG PHPHL PKPAK PLPOL PMSPM
PNPCN PRPRI PSPSE PTPRT PWPLW PYPRY QAQAT REREU ROROU RSSRB RURUS RWRWA SASAU SBSLB SCSYC SDSDN SESWE SGSGP
SHSHN SISVN SJSJM SKSVK SLSLE SMSMR SNSEN SOSOM SRSUR SSSSD STSTP SVSLV SXSXM SYSYR SZSWZ TCTCA TDTCD TFATF
TGTGO THTHA TJTJK TKTKL TLTLS TMTKM TNTUN TOTON TRTUR TTTTO TVTUV TWTWN TZTZA UAUKR UGUGA UMUMI USUSA UYURY
UZUZB VAVAT VCVCT VEVEN VGVGB VIVIR VNVNM VUVUT WFWLF WSWSM YEYEM YTMYT ZAZAF ZMZMB ZWZWE
""".split()}


def api_timeout_s(env: Mapping[str, str] = os.environ) -> float:
    """Per-request timeout of the live APIs: ``$GREENDIFF_API_TIMEOUT_S`` (read by :data:`API_TIMEOUT_S`,
    the one number grammar) or 5 s."""
    text = env.get(ENV_API_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_API_TIMEOUT_S
    return API_TIMEOUT_S.parse(text, ENV_API_TIMEOUT)


def zone_location(zone: str) -> Location | None:
    """The bundled grid an Electricity Maps zone sits on, or None when no bundled table prices it.

    A US balancing-authority zone whose authority has a bundled hourly trace is that trace; any other zone is
    its country's yearly row (a sub-national zone, e.g. ``SE-SE3`` or ``IT-NO``, its whole country's).

    Example:
        >>> [zone_location(z) for z in ("FR", "us-cal-ciso", "SE-SE3", "GB", "XX")]  # doctest: +NORMALIZE_WHITESPACE
        [Location(country='FRA', cloud=None, grid=None), Location(country=None, cloud=None, grid='CISO'),
         Location(country='SWE', cloud=None, grid=None), Location(country='GBR', cloud=None, grid=None), None]
    """
    parts = zone.upper().split("-")
    if parts[0] == "US" and len(parts) > 1 and parts[-1] in BUNDLED_GRIDS:
        return Location(grid=parts[-1])
    iso3 = _ALPHA3.get(parts[0])
    return Location(country=iso3) if iso3 in country_table() else None


def _static(location: Location) -> IntensityProvider:
    """Grid trace > cloud region > country table > world average."""
    if location.grid:
        return TraceProvider(load_trace(location.grid))
    if location.cloud:
        return cloud_provider(location.cloud)
    if location.country:
        return country_provider(location.country)
    return WorldAverageProvider()


def _zone_fallback(zone: str, location: Location, static: IntensityProvider) -> tuple[IntensityProvider, str]:
    """What prices a zone when Electricity Maps cannot: the zone's own grid (:func:`zone_location`), else
    ``static``, the location's provider (the world average when none was given); and the words that say
    which, after "fell back to <source>"."""
    place = zone_location(zone)
    if place is not None:
        return _static(place), f", the grid of zone {zone}"
    if location.is_known:
        return static, f", the location given (no bundled table knows zone {zone})"
    return static, f", as no bundled table knows zone {zone} and no location was given"


def resolve_provider(location: Location, live: str = "none", zone: str | None = None,
                     timeout_s: float | None = None, env: Mapping[str, str] = os.environ) -> IntensityProvider:
    """Grid trace > cloud region > country table > world average; a live API in front if asked.

    Electricity Maps falls back to the zone's own grid (:func:`zone_location`), the same grid it would have
    priced, and only when no bundled table knows the zone to ``location``.

    Args:
        location: Where the hardware is.
        live: ``"uk"`` (GB only), ``"electricitymaps"`` (zone and token needed) or ``"none"``.
        zone: Electricity Maps zone key (``"FR"``, ``"US-CAL-CISO"``).
        timeout_s: Per-request timeout of a live API (default :func:`api_timeout_s`).
    """
    if live not in LIVE_CHOICES:
        raise UserInputError(f"--live must be one of {', '.join(LIVE_CHOICES)}, got {live!r}")
    timeout_s = api_timeout_s(env) if timeout_s is None else timeout_s
    static = _static(location)
    if live == "uk":
        if location.country not in (None, "GBR"):
            raise UserInputError(f"--live uk covers Great Britain only; the location is {location.describe()}")
        fallback = static if location.is_known else country_provider("GBR")
        return UkCarbonIntensityProvider(fallback, env.get("GREENDIFF_UK_API_URL", UK_BASE_URL), timeout_s)
    if live == "electricitymaps":
        if not zone:
            raise UserInputError("--live electricitymaps needs --zone (an Electricity Maps zone key such as FR)")
        token = read_token("electricitymaps", ENV_ELECTRICITYMAPS_TOKEN, env)
        fallback, why = _zone_fallback(check_zone(zone), location, static)
        return ElectricityMapsProvider(zone, fallback, env.get("GREENDIFF_ELECTRICITYMAPS_URL", ELECTRICITYMAPS_BASE_URL),
                                       token=token or "", timeout_s=timeout_s, fallback_why=why)
    return static
