"""Personal data in request bodies and headers: detect validated values, then mask them.

`scan(document, detectors)` walks every string value of a parsed JSON document and returns
`Findings` (category, path such as `instances[0].note`, character span; never the value).
`apply_masks(document, findings, rules)` returns a masked copy plus the list of masked
`{path, category, method}` entries for the audit record. Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

from gateway.privacy.detector import Detector, ScanBudgetExceeded, ScanState
from gateway.privacy.detectors import (
    BUILTIN_DETECTORS,
    DEFAULT_DETECTOR_NAMES,
    DEFAULT_DETECTORS,
    UnknownDetectorError,
    detectors_named,
)
from gateway.privacy.findings import BinaryInput, Findings, PersonalDataFinding, header_path
from gateway.privacy.masking import MaskedEntry, MaskRule, apply_masks, mask_headers, mask_text
from gateway.privacy.matchers import EmailDetector, IbanDetector, PatternDetector, PhoneDetector
from gateway.privacy.scan import (
    DEFAULT_SCAN_BUDGET,
    scan,
    scan_byte_values,
    scan_headers,
    scan_text,
)

__all__ = [
    "BUILTIN_DETECTORS",
    "BinaryInput",
    "DEFAULT_SCAN_BUDGET",
    "DEFAULT_DETECTORS",
    "DEFAULT_DETECTOR_NAMES",
    "Detector",
    "EmailDetector",
    "PersonalDataFinding",
    "Findings",
    "IbanDetector",
    "MaskRule",
    "MaskedEntry",
    "PatternDetector",
    "PhoneDetector",
    "ScanBudgetExceeded",
    "ScanState",
    "UnknownDetectorError",
    "apply_masks",
    "detectors_named",
    "header_path",
    "mask_headers",
    "mask_text",
    "scan",
    "scan_byte_values",
    "scan_headers",
    "scan_text",
]
