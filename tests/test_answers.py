import pytest

from hicom.evaluate.answers import extract_choice

OPTIONS = ["red", "green", "blue", "white"]


@pytest.mark.parametrize("reply,letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("C) blue", "C"), ("The answer is C", "C"), ("Answer: D", "D"),
    ("Based on the video, A", "A"), ("Based on the video, the answer is (D).", "D"),
    ("I cannot tell", None), ("A and B", None), ("", None), ("It is blue.", "C"),
    ("Blue or green", None),
])
def test_reply_maps_to_one_option_or_to_unanswered(reply, letter):
    assert extract_choice(reply, OPTIONS) == letter


def test_letters_beyond_the_options_are_not_answers():
    assert extract_choice("E", OPTIONS) is None
