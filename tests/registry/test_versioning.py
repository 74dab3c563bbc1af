import pytest

from registry.versioning import parse_version, version_sort_key

# semver.org §11's example chain, plus numeric-width cases.
ORDERED = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.9.0",
    "1.10.0",
    "2.0.0-a",
    "2.0.0-a.b",  # identifiers compare first: "a" < "a-" in ASCII, so a.b ranks below a-
    "2.0.0-a-",
    "2.0.0",
    "10.0.0",
]


def test_sort_key_orders_by_semver_precedence():
    keys = [version_sort_key(v) for v in ORDERED]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert all(key.isdigit() for key in keys)


def test_build_metadata_does_not_change_precedence():
    assert version_sort_key("1.0.0+build.7") == version_sort_key("1.0.0")


@pytest.mark.parametrize("bad", ["1", "1.0", "v1.0.0", "01.0.0", "1.0.0-", "", "1.0.0-01", "a.b.c", "1." * 40 + "0"])
def test_invalid_versions_are_refused(bad):
    with pytest.raises(ValueError):
        parse_version(bad)
