"""Located YAML -> the `Vocabulary`: purposes, lawful bases, consents, personal-data
categories, flags, regimes and the region groups (shape only)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import did_you_mean
from gateway.policy.codes import SHAPE
from gateway.policy.reader import Reader
from gateway.policy.vocabulary import RegimeInfo, Vocabulary, build_groups
from gateway.source import DataPath

__all__ = [
    "parse_vocabulary",
]


_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SUBDIVISION = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_VOCAB_SETS = (
    "lawful_bases",
    "consents",
    "deployment_contexts",
    "transfer_mechanisms",
    "sink_categories",
    "model_kinds",
    "model_outputs",
    "licence_kinds",
)
_FLAG_TYPES = ("boolean", "string", "integer")


def parse_vocabulary(r: Reader, data: dict[str, Any]) -> Vocabulary | None:
    """Read a `kind: vocabulary` document; None when any part of it is wrong."""
    r.mapping(
        data,
        (),
        what="vocabulary",
        required=("kind", "regions", "purposes", "personal_data", "regimes"),
        optional=("version", "purpose_attributes", "tenant_flags", *_VOCAB_SETS),
    )
    before = len(r.diagnostics)
    countries, subdivisions, groups, order = _parse_regions(r, data.get("regions"))
    attributes = _described_names(
        r, data.get("purpose_attributes", {}), ("purpose_attributes",), "purpose attribute"
    )
    purposes = _parse_purposes(r, data.get("purposes"), attributes)
    pd = _described_names(
        r, data.get("personal_data"), ("personal_data",), "personal-data category"
    )
    regimes = _parse_regimes(r, data.get("regimes"))
    sets: dict[str, frozenset[str]] = {}
    for key in _VOCAB_SETS:
        sets[key] = frozenset(_described_names(r, data.get(key, []), (key,), key[:-1]))
    flags = _parse_flags(r, data.get("tenant_flags", {}))
    if len(r.diagnostics) != before:
        return None
    return Vocabulary(
        countries=frozenset(countries),
        subdivisions=subdivisions,
        groups=groups,
        purposes=purposes,
        purpose_attributes=attributes,
        personal_data=pd,
        regimes=regimes,
        lawful_bases=sets["lawful_bases"],
        consents=sets["consents"],
        deployment_contexts=sets["deployment_contexts"],
        transfer_mechanisms=sets["transfer_mechanisms"],
        sink_categories=sets["sink_categories"],
        model_kinds=sets["model_kinds"],
        model_outputs=sets["model_outputs"],
        licence_kinds=sets["licence_kinds"],
        tenant_flags=flags,
        file=r.doc.filename,
        _group_order=order,
    )


def _parse_purposes(
    r: Reader, raw: object, attributes: Mapping[str, str]
) -> dict[str, dict[str, bool]]:
    """Purposes by name, each with the purpose attributes it sets."""
    purposes: dict[str, dict[str, bool]] = {}
    for name, attrs in (r.keyed(raw, ("purposes",), "purposes") or {}).items():
        sub: DataPath = ("purposes", name)
        if not _NAME.match(name):
            r.error(SHAPE, f"invalid purpose name `{name}`", sub, at_key=True)
        purposes[name] = {}
        if attrs is None:
            continue
        ad = r.mapping(attrs, sub, what=f"purpose `{name}`", optional=tuple(attributes))
        for attr, flag in (ad or {}).items():
            if attr in attributes:
                value = r.boolean(flag, (*sub, attr), attr)
                if value is not None:
                    purposes[name][attr] = value
    return purposes


def _parse_regimes(r: Reader, raw: object) -> dict[str, RegimeInfo]:
    """Legal regimes by id: name, URL, demanding party and jurisdiction."""
    regimes: dict[str, RegimeInfo] = {}
    for rid, info in (r.keyed(raw, ("regimes",), "regimes") or {}).items():
        sub = ("regimes", rid)
        idata = r.mapping(
            info,
            sub,
            what=f"regime `{rid}`",
            required=("name",),
            optional=("url", "demanding_party", "jurisdiction"),
        )
        if idata is None:
            continue
        regimes[rid] = RegimeInfo(
            rid,
            r.string(idata.get("name"), (*sub, "name"), "name") or rid,
            r.optional_string(idata, "url", sub, "url"),
            r.optional_string(idata, "demanding_party", sub, "demanding_party"),
            r.optional_string(idata, "jurisdiction", sub, "jurisdiction"),
        )
    return regimes


def _parse_flags(r: Reader, raw: object) -> dict[str, str]:
    """Tenant flags by name, each with its value type."""
    flags: dict[str, str] = {}
    for name, spec in (r.keyed(raw, ("tenant_flags",), "tenant_flags") or {}).items():
        sub = ("tenant_flags", name)
        sd = r.mapping(
            spec, sub, what=f"tenant flag `{name}`", required=("type",), optional=("description",)
        )
        if sd is not None and "type" in sd:
            ftype = r.string(sd["type"], (*sub, "type"), "flag type", choices=_FLAG_TYPES)
            if ftype is not None:
                flags[name] = ftype
    return flags


def _described_names(r: Reader, raw: object, path: DataPath, what: str) -> dict[str, str]:
    """Read either a list of names or a mapping of name -> description."""
    out: dict[str, str] = {}
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            name = r.string(item, (*path, i), what)
            if name is not None:
                out[name] = ""
        return out
    if not isinstance(raw, dict):
        r.type_error(path, "a list or a mapping", raw, what + "s")
        return out
    for name, desc in raw.items():
        if desc is not None and not isinstance(desc, str):
            r.type_error((*path, name), "a description string", desc, name)
        out[name] = desc or ""
    return out


def _parse_regions(
    r: Reader,
    raw: object,
) -> tuple[set[str], dict[str, str], dict[str, frozenset[str]], tuple[str, ...]]:
    path: DataPath = ("regions",)
    data = r.mapping(
        raw, path, what="regions", required=("countries",), optional=("subdivisions", "groups")
    )
    if data is None:
        return set(), {}, {}, ()
    countries: set[str] = set()
    for i, code in enumerate(
        r.listing(data.get("countries", []), (*path, "countries"), "countries")
    ):
        text = r.string(
            code,
            (*path, "countries", i),
            "country code",
            pattern=_COUNTRY,
            pattern_help="use ISO 3166-1 alpha-2 codes such as `DE`",
        )
        if text is not None:
            countries.add(text)
    subdivisions: dict[str, str] = {}
    for code, name in _described_names(
        r, data.get("subdivisions", {}), (*path, "subdivisions"), "subdivision"
    ).items():
        sub = (*path, "subdivisions", code)
        if not _SUBDIVISION.match(code):
            r.error(
                SHAPE,
                f"invalid subdivision code `{code}`",
                sub,
                at_key=True,
                help="use ISO 3166-2 codes such as `US-CA`",
            )
        elif code[:2] not in countries:
            r.error(
                "policy_ref_error",
                f"subdivision `{code}` names unknown country `{code[:2]}`",
                sub,
                at_key=True,
            )
        subdivisions[code] = name
    raw_groups: dict[str, list[str]] = {}
    gd = r.keyed(data.get("groups", {}), (*path, "groups"), "groups")
    for name, members in (gd or {}).items():
        sub = (*path, "groups", name)
        if name in countries or name in subdivisions:
            r.error(SHAPE, f"group `{name}` shadows a region code", sub, at_key=True)
        raw_groups[name] = r.string_list(members, sub, "group member", allow_empty=False)
    known = countries | set(subdivisions) | set(raw_groups)
    for name, members in raw_groups.items():
        for i, member in enumerate(members):
            if member not in known:
                r.error(
                    "policy_ref_error",
                    f"unknown region `{member}` in group `{name}`",
                    (*path, "groups", name, i),
                    help=did_you_mean(member, sorted(known)),
                )
    groups, order, cycles = build_groups(raw_groups)
    for name, chain in cycles:
        r.error(
            SHAPE,
            f"region group `{name}` contains itself ({chain})",
            (*path, "groups", name),
            at_key=True,
        )
    return countries, subdivisions, groups, order
