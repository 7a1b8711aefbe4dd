"""Limits of statusd's input, each stated once: the models, the ingest checker and the OpenAPI
document all read them from here.

A workload id is what the `workloads.id` column holds and what a Redis key and a URL path
carry unescaped; a label key has no ':' so `label=k:v` filters split cleanly.
"""

from __future__ import annotations

import re

MAX_WORKLOAD_ID = 200  # the workloads.id column width
WORKLOAD_ID_CHARS = "A-Za-z0-9._:-"
WORKLOAD_ID_PATTERN = f"^[{WORKLOAD_ID_CHARS}]{{1,{MAX_WORKLOAD_ID}}}$"
WORKLOAD_ID_RE = re.compile(WORKLOAD_ID_PATTERN)  # `$` after fullmatch's end: use .fullmatch
ID_PREFIX_PATTERN = f"^[{WORKLOAD_ID_CHARS}]{{0,{MAX_WORKLOAD_ID}}}$"

MAX_LABEL_KEY = 100
LABEL_KEY_PATTERN = f"^[A-Za-z0-9._/-]{{1,{MAX_LABEL_KEY}}}$"
MAX_LABELS = 64
MAX_LABEL_VALUE = 500

MAX_REASON = 1000  # transition and silence reasons
MAX_STATUS_URL = 2048
# No control characters (C0, DEL, C1) in a status_url: CR/LF would split the poll's request line
# (header injection), and nothing legitimate needs them; refused at registration, never stored.
STATUS_URL_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
STATUS_URL_RE = re.compile(STATUS_URL_PATTERN)
MAX_SILENCE_ID = 36  # a uuid4 in text

# BIGINT: seq, transition ids and every integer that reaches SQL (SQLite raises beyond it).
MAX_INT64 = 2**63 - 1
SEQ_LIMIT = MAX_INT64 + 1  # seq < SEQ_LIMIT
MAX_DETAIL_BYTES = 1024  # a heartbeat's `detail`, UTF-8 encoded
DEFAULT_MAX_QUIET_S = 3600  # a heartbeat's `quiet_for_s` at most (STATUSD_MAX_QUIET_S)

MAX_LIMIT = 500  # page sizes
DEFAULT_LIMIT = 100
DEFAULT_RECENT_LIMIT = 50  # /v1/reports/transitions

MAX_HISTORY_SAMPLES = (
    360  # a picture wider than this says nothing more, and costs memory per request
)
MAX_HISTORY_WINDOW_S = 7 * 86400

# Availability reports: the longest window, and the default when `from` is not given.
MAX_AVAILABILITY_WINDOW_S = 731 * 86400
DEFAULT_AVAILABILITY_WINDOW_S = 30 * 86400
