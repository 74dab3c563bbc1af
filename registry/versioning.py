"""Semantic versions: validation and a database sort key that orders by semver precedence.

The key is made of digits only, so every database collation (PostgreSQL's locale-aware ones
included) orders it the same way as a byte-wise comparison would.
"""

from __future__ import annotations

import semver

MAX_VERSION_LENGTH = 64
_NUMBER_WIDTH = 20  # digits for a numeric part: 2**64 fits


def parse_version(value: str) -> semver.Version:
    """Parse a strict semantic version ("1.2.3", "1.0.0-rc.1", "2.0.0+build.5")."""
    if len(value) > MAX_VERSION_LENGTH:
        raise ValueError(f"a version is at most {MAX_VERSION_LENGTH} characters")
    try:
        return semver.Version.parse(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"'{value}' is not a semantic version such as 1.2.0 or 2.0.0-rc.1") from exc


def _number(value: int) -> str:
    if value >= 10**_NUMBER_WIDTH:
        raise ValueError("a version number is at most 20 digits")
    return str(value).zfill(_NUMBER_WIDTH)


def version_sort_key(value: str) -> str:
    """A digit string whose lexical order is semver precedence.

    Layout: major, minor, patch; then "1" for a release (it outranks every pre-release of the
    same triple) or "0" followed by the pre-release identifiers. A numeric identifier is "1"
    plus its zero-padded value and ranks below any alphanumeric one ("2" plus 3-digit ASCII
    codes and a "000" terminator, lower than any character, so "a" < "a-" < "b"). A shorter
    identifier list is a prefix of a longer one and so ranks lower, as semver requires.
    Build metadata does not take part in precedence.
    """
    version = parse_version(value)
    key = _number(version.major) + _number(version.minor) + _number(version.patch)
    if not version.prerelease:
        return key + "1"
    key += "0"
    for identifier in version.prerelease.split("."):
        if identifier.isdigit():
            key += "1" + _number(int(identifier))
        else:
            key += "2" + "".join(f"{ord(ch):03d}" for ch in identifier) + "000"
    return key
