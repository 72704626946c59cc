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


# -- reply corpora per benchmark ------------------------------------------------------------------------------
# EgoSchema's options start with "C", the camera wearer: a bare capital C there is a person, not option C.
EGOSCHEMA = [
    ["C cooks a meal in the kitchen.", "C washes the dishes.", "C cooks a meal in the kitchen and then eats it.",
     "C talks to a man about the garden.", "C reads a book on the sofa."],
    ["c repairs a bicycle wheel", "C cleans the bicycle", "C rides the bicycle to work", "C paints the bicycle",
     "C sells the bicycle to a woman"],
]


def naming_replies(letter: str, text: str) -> list[str]:
    """Every way a reply names one option: by a marker, or by its whole text."""
    bare = text.rstrip(".")
    return [letter, f"{letter}.", f"({letter})", f"{letter})", f"{letter}. {text}", f"({letter}) {text}",
            f"{letter}) {bare}", f"Answer: {letter}", f"The answer is ({letter}).", f"The best option is {letter}",
            f"option {letter}", text, bare, text.lower(), text.upper().rstrip("."), f"'{bare}'",
            f"I think {bare}."]


@pytest.mark.parametrize("options", EGOSCHEMA)
def test_egoschema_every_reply_that_names_an_option_maps_to_it(options):
    for k, text in enumerate(options):
        letter = "ABCDE"[k]
        for reply in naming_replies(letter, text):
            assert extract_choice(reply, options) == letter, reply


@pytest.mark.parametrize("options", EGOSCHEMA)
def test_egoschema_replies_naming_none_or_two_options_are_unanswered(options):
    none = ["C is cooking.", "C", "I cannot tell from the video.", "C looks at the camera", "", "C does something."]
    two = [f"{options[1]} or {options[3]}", "B or D", "(B) and (D)", "Answer: B/D", f"B. {options[1]} D. {options[3]}"]
    for reply in none[:1] + none[2:] + two:
        assert extract_choice(reply, options) is None, reply
    assert extract_choice("C", options) == "C"  # alone, C names the option, not the person


@pytest.mark.parametrize("options,reply,letter", [
    # Video-MME (4 options, letters in the prompt)
    (["One.", "Two.", "Three.", "Four."], "B. Two.", "B"),
    (["One.", "Two.", "Three.", "Four."], "Three", "C"),
    (["One.", "Two.", "Three.", "Four."], "The best answer is: D", "D"),
    (["One.", "Two.", "Three.", "Four."], "Washington D.C.", None),
    # MVBench (candidates without letters; up to 5)
    (["Left", "Right", "Up"], "(B) Right", "B"),
    (["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle."],
     "Put down the cup/glass/bottle", "C"),
    (["Left", "Right", "Up"], "Left or right", None),
    # MLVU (dev candidates, some of them numbers)
    (["1", "2", "3", "4"], "(C) 3", "C"),
    (["1", "2", "3", "4"], "4", "D"),
    (["1->2->3", "3->2->1", "2->1->3", "1->3->2"], "3->2->1", "B"),
    (["Red", "Blue", "Dark red", "Green"], "Dark red.", "C"),
])
def test_reply_corpus_of_the_other_benchmarks(options, reply, letter):
    assert extract_choice(reply, options) == letter
