"""Semantic versions: validation and a database sort key that orders by semver precedence.

The key is made of digits only, so every database collation (PostgreSQL's locale-aware ones
included) orders it the same way as a byte-wise comparison would.

Every number in a version (major, minor, patch and numeric pre-release identifiers) is at most
`MAX_NUMBER_DIGITS` digits: the sort key pads each to that width. `parse_version` refuses
longer ones, so a version that parses always has a key, and the key of the longest version
(`MAX_VERSION_LENGTH` characters) fits `MAX_SORT_KEY_LENGTH`.
"""

from __future__ import annotations

import semver

MAX_VERSION_LENGTH = 64
MAX_NUMBER_DIGITS = 20  # 2**64 fits
# The densest version of MAX_VERSION_LENGTH characters is "0.0.0-" and single-digit numeric
# identifiers ("0.0.0-1.1.1...", 29 of them): 3 * 20 + 1 + 29 * 21 = 670 key digits.
MAX_SORT_KEY_LENGTH = 700


def parse_version(value: str) -> semver.Version:
    """Parse a strict semantic version ("1.2.3", "1.0.0-rc.1", "2.0.0+build.5").

    ValueError (its message says what to fix) for anything else, including a number of more
    than MAX_NUMBER_DIGITS digits.
    """
    if len(value) > MAX_VERSION_LENGTH:
        raise ValueError(f"A version is at most {MAX_VERSION_LENGTH} characters.")
    try:
        version = semver.Version.parse(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"'{value}' is not a semantic version such as 1.2.0 or 2.0.0-rc.1.") from exc
    for number in _numbers(version):
        if number >= 10**MAX_NUMBER_DIGITS:
            raise ValueError(
                f"'{value}' has a number of more than {MAX_NUMBER_DIGITS} digits; "
                f"each number of a version is at most {MAX_NUMBER_DIGITS} digits."
            )
    return version


def _numbers(version: semver.Version) -> list[int]:
    numeric = [int(part) for part in (version.prerelease or "").split(".") if part.isdigit()]
    return [version.major, version.minor, version.patch, *numeric]


def _number(value: int) -> str:
    return str(value).zfill(MAX_NUMBER_DIGITS)


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
