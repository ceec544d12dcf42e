"""The job id of a request object: always a valid job id, stable for one write, distinct across keys and writes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from imagegen.jobs import _object_job_id
from imagegen.options import JOB_ID_PATTERN

keys = st.text(min_size=1, max_size=300).map(lambda text: text + ".json")
declared = st.none() | st.from_regex(JOB_ID_PATTERN, fullmatch=True)
sequencers = st.none() | st.text(max_size=40)


@given(keys, declared, sequencers)
def test_always_a_valid_job_id_and_the_same_for_the_same_write(key: str, given_id: str | None, sequencer: str | None) -> None:
    job_id = _object_job_id(key, given_id, sequencer)
    assert re.fullmatch(JOB_ID_PATTERN, job_id), job_id
    assert job_id == _object_job_id(key, given_id, sequencer)


@given(keys, keys, declared, st.text(min_size=1, max_size=20, alphabet="0123456789ABCDEF"))
def test_two_keys_naming_one_id_are_two_jobs(first: str, second: str, given_id: str | None, sequencer: str) -> None:
    if first != second:
        assert _object_job_id(first, given_id, sequencer) != _object_job_id(second, given_id, sequencer)


def test_another_write_of_the_key_is_another_job() -> None:
    assert _object_job_id("batch/fox.json", "catalog-4711", "0055AED6DCD90281E5") != _object_job_id(
        "batch/fox.json", "catalog-4711", "0055AED6DCD90281F0"
    )
    assert _object_job_id("batch/fox.json", None, "0055AED6DCD90281E5").startswith("batch-fox-")
