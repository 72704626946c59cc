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


@pytest.mark.parametrize("reply,letter", [
    ("Answer: A or B", None),  # an explicit marker on a hedge is still a hedge
    ("A/B", None), ("(A), (C)", None),
    ("The best answer is: (b)", "B"), ("the answer is b.", "B"), ("Option B", "B"),
    ("The correct option is A, not B.", "A"),  # the named answer wins over a letter merely mentioned
    ("I'd say C", "C"),  # the I of "I'd" is not a letter
    ("C.\nExplanation: the object is blue", "C"),
    ("A is correct", "A"),
])
def test_hedges_and_explicit_answers(reply, letter):
    assert extract_choice(reply, OPTIONS) == letter


def test_article_a_is_not_option_a():
    shapes = ["circle", "square", "triangle", "cross"]
    assert extract_choice("A person is walking", shapes) is None
    assert extract_choice("A square moves left", shapes) == "B"  # read by its option text, not the article
    assert extract_choice("The answer is a square", shapes) == "B"


def test_an_option_inside_a_longer_quoted_option_does_not_count():
    assert extract_choice("dark red", ["red", "dark red"]) == "B"


def test_letters_beyond_the_options_are_not_answers():
    assert extract_choice("E", OPTIONS) is None
    assert extract_choice("E", OPTIONS + ["black"]) == "E"
