"""The region groups of the committed vocabulary (policies/vocabulary.yaml), for routing tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from gateway.policy.vocabulary import build_groups
from gateway.request.regions import RegionGroups

VOCABULARY = Path(__file__).resolve().parents[1] / "policies" / "vocabulary.yaml"


@cache
def vocabulary_groups() -> RegionGroups:
    """`RegionGroups` as the gateway builds them from the committed vocabulary."""
    raw = yaml.safe_load(VOCABULARY.read_text(encoding="utf-8"))["regions"]["groups"]
    return RegionGroups.from_vocabulary(build_groups(raw)[0])
