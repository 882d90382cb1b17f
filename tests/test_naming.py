"""Session ids: the documented examples, injectivity, round-trips, and bad input."""

from __future__ import annotations

import itertools
import unicodedata
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import dated_session_id, feature_session_id, parse_session_id, thread_session_id, user_session_id
from multisessions import ParsedSessionId, check_session_id, make_session_id
from multisessions.naming import MAX_ID_LENGTH, MAX_PART_LENGTH


def test_documented_examples_stay_exactly_as_shown():
    assert user_session_id("123") == "user_123"
    assert feature_session_id("chat", "123") == "chat_feature_user_123"
    assert thread_session_id("abc123") == "thread_abc123"
    assert dated_session_id("123", date(2024, 12, 15)) == "user_123_20241215"


def test_the_naive_f_string_collisions_do_not_happen():
    assert user_session_id("123_20241215") != dated_session_id("123", date(2024, 12, 15))
    assert user_session_id("feature_user_1") != feature_session_id("user", "1")
    assert user_session_id("a_b") != user_session_id("a%5Fb")


def test_real_user_ids_work_and_round_trip():
    for user in ("alice@example.com", "a_b", "José", "李雷", "x y", "100%"):
        parsed = parse_session_id(user_session_id(user))
        assert parsed == ParsedSessionId("user", user=user)


def test_tenant_prefix_keeps_apps_apart():
    assert user_session_id("1", tenant="acme") == "acme:user_1"
    assert user_session_id("1", tenant="acme") != user_session_id("1", tenant="globex")
    assert parse_session_id("acme:user_1") == ParsedSessionId("user", user="1", tenant="acme")


@pytest.mark.parametrize(
    "session_id",
    ["random", "user_", "user_a_b_c", "thread_a_20241301", "user_a%5f", "user_%41", "x:y:user_1", ""],
)
def test_ids_the_helpers_could_not_make_are_reported_unknown(session_id):
    assert parse_session_id(session_id).kind == "unknown"


@pytest.mark.parametrize(
    "bad, part",
    [
        (None, "user_id"),
        ("", "user_id"),
        ("   ", "user_id"),
        (" alice", "user_id"),
        ("al\x00ice", "user_id"),
        ("a\nb", "user_id"),
        ("x" * (MAX_PART_LENGTH + 1), "user_id"),
        ("e\u0301", "user_id"),  # not NFC: would look identical to "é"
    ],
)
def test_bad_parts_raise_value_error_naming_the_part(bad, part):
    with pytest.raises(ValueError, match=part):
        user_session_id(bad)


def test_bad_feature_and_thread_parts_are_named():
    with pytest.raises(ValueError, match="feature"):
        feature_session_id("", "1")
    with pytest.raises(ValueError, match="thread_id"):
        thread_session_id("\t")
    with pytest.raises(ValueError, match="tenant"):
        user_session_id("1", tenant=" ")


def test_dates_accept_date_datetime_and_validated_strings():
    assert dated_session_id("1", datetime(2024, 12, 15, 23, 0)) == "user_1_20241215"
    # An aware datetime is converted to UTC first: 23:00 at UTC-5 is the next day in UTC.
    late = datetime(2024, 12, 15, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert dated_session_id("1", late) == "user_1_20241216"
    assert dated_session_id("1", "20241215") == "user_1_20241215"
    for bad in ("2024-12-15", "20241315", "20240230", "1234567", 20241215):
        with pytest.raises(ValueError, match="day"):
            dated_session_id("1", bad)


def test_check_session_id_accepts_printable_ids_and_rejects_the_rest():
    assert check_session_id("x'; DROP TABLE agent_sessions; --") == "x'; DROP TABLE agent_sessions; --"
    for bad in ("", " ", "a\x1b[31m", "x" * (MAX_ID_LENGTH + 1), None):
        with pytest.raises(ValueError, match="session id"):
            check_session_id(bad)


# --- Property tests ------------------------------------------------------------------------

part = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=20
).filter(lambda s: s == s.strip() and bool(s.strip()) and unicodedata.is_normalized("NFC", s))
# Parts built from separators and kind words find collisions fastest.
tricky = st.lists(
    st.sampled_from(["_", "user", "feature", "thread", "1", "20241215", "%", "5F", ":"]),
    min_size=1,
    max_size=5,
).map("".join)
any_part = part | tricky
day = st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31))
tenant = st.none() | any_part

inputs = st.one_of(
    st.tuples(st.just("user"), any_part, tenant),
    st.tuples(st.just("feature"), st.tuples(any_part, any_part), tenant),
    st.tuples(st.just("thread"), any_part, tenant),
    st.tuples(st.just("dated"), st.tuples(any_part, day), tenant),
)


def make(spec) -> str:
    kind, args, tenant_ = spec
    if kind == "user":
        return user_session_id(args, tenant=tenant_)
    if kind == "thread":
        return thread_session_id(args, tenant=tenant_)
    if kind == "feature":
        return feature_session_id(*args, tenant=tenant_)
    return dated_session_id(*args, tenant=tenant_)


@settings(max_examples=500)
@given(inputs, inputs)
def test_different_inputs_never_give_the_same_id(a, b):
    if a != b:
        assert make(a) != make(b)


@given(inputs)
def test_parse_round_trips_what_the_helpers_make(spec):
    session_id = make(spec)
    parsed = parse_session_id(session_id)
    assert parsed.kind == spec[0]
    assert parsed.tenant == spec[2]
    assert make_session_id(parsed) == session_id


@given(st.text(max_size=40))
def test_parse_never_crashes_and_only_accepts_what_it_can_rebuild(text):
    parsed = parse_session_id(text)
    if parsed.kind != "unknown":
        assert make_session_id(parsed) == text


def test_no_collision_among_every_id_built_from_separator_heavy_parts():
    # Exhaustive over a small, hostile domain: parts made of separators and the kinds' own words,
    # where naive f-strings collide (user "1_20241215" vs user "1" on 2024-12-15, and so on).
    tokens = ["_", "user", "feature", "thread", "1", "20241215", "%5F", "_feature_user_", ":"]
    short = ["".join(p) for n in (1, 2) for p in itertools.product(tokens, repeat=n)]
    longer = short + ["".join(p) for p in itertools.product(tokens, repeat=3)]
    days = [date(2024, 12, 15), date(2024, 12, 16)]
    specs = (
        [("user", p, None) for p in longer]
        + [("thread", p, None) for p in longer]
        + [("dated", (p, d), None) for p in longer for d in days]
        + [("feature", (f, u), None) for f in short for u in short]
        + [("user", "1", t) for t in short]
    )
    ids = [make(spec) for spec in specs]
    assert len(set(ids)) == len(specs)
