"""How the admin shows dates and times (FORMAT_MODULE_PATH): one timestamp format everywhere,
with seconds and the time zone, e.g. 2026-12-06 19:32:27 UTC. Django's own English formats
("Dec. 6, 2026, 7:32 p.m.") have neither. Used by the admin's lists and pages for every
DateTimeField, and by templates through ``|date:"DATETIME_FORMAT"``. The API is not affected:
DRF writes ISO 8601."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = DATE_FORMAT
TIME_FORMAT = "H:i:s"
