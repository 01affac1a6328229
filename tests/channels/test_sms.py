"""SMS length as carriers bill it: GSM-7 or UCS-2, single or concatenated."""

from __future__ import annotations

import pytest

from channels.sms import OPT_OUT_LINE, SmsSize, sms_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, SmsSize("GSM-7", 160, 1)),
        ("a" * 161, SmsSize("GSM-7", 161, 2)),
        ("a" * 306, SmsSize("GSM-7", 306, 2)),
        ("a" * 307, SmsSize("GSM-7", 307, 3)),
        ("", SmsSize("GSM-7", 0, 0)),
    ],
)
def test_gsm_single_and_concatenated_limits(text, expected):
    assert sms_size(text) == expected


def test_extension_characters_count_two_units():
    assert sms_size("€") == SmsSize("GSM-7", 2, 1)
    assert sms_size("^{}\\[~]|€\f").units == 20
    # 159 + one euro sign = 161 units: no longer fits one message.
    assert sms_size("a" * 158 + "€") == SmsSize("GSM-7", 160, 1)
    assert sms_size("a" * 159 + "€") == SmsSize("GSM-7", 161, 2)


def test_an_extension_character_is_never_split_across_segments():
    # 152 units, then a two-unit euro sign that would straddle the 153-unit boundary: it
    # moves to the second part, which then has room for 151 more units before a third.
    text = "a" * 152 + "€" + "a" * 151
    assert sms_size(text) == SmsSize("GSM-7", 305, 2)
    assert sms_size(text + "a") == SmsSize("GSM-7", 306, 3)  # plain counting would say 2


def test_accented_letters_in_the_gsm_alphabet_stay_gsm():
    assert sms_size("Café in Zürich, £12 — no").encoding == "UCS-2"  # the em dash is not GSM
    assert sms_size("Café in Zürich, £12").encoding == "GSM-7"
    assert sms_size("é" * 160) == SmsSize("GSM-7", 160, 1)


def test_one_character_outside_gsm_switches_to_ucs2():
    assert sms_size("ł" * 70) == SmsSize("UCS-2", 70, 1)
    assert sms_size("ł" * 71) == SmsSize("UCS-2", 71, 2)
    assert sms_size("a" * 133 + "ł") == SmsSize("UCS-2", 134, 2)
    assert sms_size("ł" * 134) == SmsSize("UCS-2", 134, 2)
    assert sms_size("ł" * 135) == SmsSize("UCS-2", 135, 3)


def test_an_emoji_counts_two_utf16_units_and_is_not_split():
    assert sms_size("👍") == SmsSize("UCS-2", 2, 1)
    assert sms_size("a" * 68 + "👍") == SmsSize("UCS-2", 70, 1)
    assert sms_size("a" * 69 + "👍") == SmsSize("UCS-2", 71, 2)
    # 66 units then a surrogate pair at the 67-unit boundary: it goes whole to part two.
    assert sms_size("ł" * 66 + "👍" + "ł" * 65) == SmsSize("UCS-2", 133, 2)
    assert sms_size("ł" * 66 + "👍" + "ł" * 66) == SmsSize("UCS-2", 134, 3)


def test_the_opt_out_line_is_plain_gsm():
    assert OPT_OUT_LINE == "Reply STOP to opt out"
    assert sms_size(OPT_OUT_LINE).encoding == "GSM-7"
