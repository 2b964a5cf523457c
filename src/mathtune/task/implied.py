"""Numbers a question brings without writing them as digits, and digits that are no quantity:
what the probe's tracer (task.chain) needs to account for every number of a solution.

    implied_values(question) -> {value: why}     "two", "half", "a dozen", "7 days a week" unsaid,
                                                 "percent", "round trip": the values its words give
    naming_spans(question)   -> {(start, end): why}  "2 x 4" lumber, "Route 66", "3 pm", "7:30":
                                                 digits that name a thing or a time, never drawn
    time_spans(question)     -> {(start, end): unit}  "8 hours", "3-day": numbers of a time unit

A solution's constant that none of these explains, and that is no number of the question nor an
earlier result, came from somewhere the tracer cannot see (a step done in prose, a fact of the
world the question leaves unsaid): the problem is skipped rather than guessed at.

Written by hand: no library we use reads number words and unit facts out of prose; a fixed
table of the words grade-school problems use covers them, and anything outside it is skipped.
"""

from __future__ import annotations

import re
from fractions import Fraction

UNITS_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
               "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS_WORDS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
              "ninety": 90}
NUMBER_WORDS = {**{w: n for n, w in enumerate(UNITS_WORDS)}, **TENS_WORDS, "hundred": 100, "thousand": 1000,
                "million": 1000000}
# Words (matched at a word start, so "week" matches "weeks" and "weekly") and the values they
# bring into a solution: how many of a thing, or what a unit holds.
WORD_VALUES: dict[str, tuple[Fraction | int, ...]] = {
    "half": (2, Fraction(1, 2)), "halves": (2, Fraction(1, 2)), "twice": (2,), "double": (2,), "pair": (2,),
    "couple": (2,), "both": (2,), "twin": (2,), "second": (60,),
    "triple": (3,), "thrice": (3,), "quarter": (4, Fraction(1, 4), 25), "quadruple": (4,),
    "dozen": (12,), "score": (20,), "parent": (2,), "grandparent": (2, 4), "triplet": (3,), "eyes": (2,),
    "ears": (2,), "hands": (2,), "bicycle": (2,), "bike": (2,), "tricycle": (3,), "rectang": (2, 4), "square": (4,),
    "perimeter": (2, 4), "triangle": (3,),
    "weekday": (5,), "school week": (5,), "work week": (5,), "workweek": (5,), "weekend": (2,), "fortnight": (14,),
    "decade": (10,), "century": (100,), "percent": (100, Fraction(1, 100)), "%": (100, Fraction(1, 100)),
    "thousand": (1000,), "hundred": (100,),
    "round trip": (2,), "round-trip": (2,), "there and back": (2,), "back and forth": (2,), "both ways": (2,),
    "each way": (2,), "one way": (2,), "one-way": (2,), "to and from": (2,),
}
# What a unit holds of a smaller one, brought in only where the question names both ("hours" and
# "day" for 24): a solution converts between units the question speaks of.
UNIT_PAIRS: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[int, ...]] = {
    (("second",), ("minute",)): (60,), (("second",), ("hour",)): (3600,), (("minute",), ("hour",)): (60,),
    (("minute",), ("day", "daily")): (1440,), (("hour",), ("day", "daily", "night")): (24,),
    (("hour",), ("week",)): (168,), (("day", "daily"), ("week",)): (7,), (("day", "daily"), ("month",)): (28, 29, 30, 31),
    (("day", "daily"), ("year", "annual")): (365, 366), (("week",), ("year", "annual")): (52,),
    (("month",), ("year", "annual")): (12,), (("week",), ("month",)): (4,), (("year",), ("decade",)): (10,),
    (("inch",), ("foot", "feet")): (12,), (("inch",), ("yard",)): (36,), (("foot", "feet"), ("yard",)): (3,),
    (("foot", "feet"), ("mile",)): (5280,), (("yard",), ("mile",)): (1760,),
    (("cent", "penny", "pennies"), ("dollar", "$")): (100,), (("nickel",), ("dollar", "$")): (20, 5),
    (("dime",), ("dollar", "$")): (10,), (("quarter",), ("dollar", "$")): (4, 25),
    (("ounce", "oz"), ("pound", "lb")): (16,), (("pound", "lb"), ("ton",)): (2000,), (("ounce", "oz"), ("cup",)): (8,),
    (("cup",), ("pint",)): (2,), (("pint",), ("quart",)): (2,), (("cup",), ("quart",)): (4,),
    (("quart",), ("gallon",)): (4,), (("pint",), ("gallon",)): (8,), (("cup",), ("gallon",)): (16,),
    (("ounce", "oz"), ("gallon",)): (128,), (("teaspoon",), ("tablespoon",)): (3,),
    (("gram",), ("kilogram", "kilo", "kg")): (1000,), (("milligram", "mg"), ("gram",)): (1000,),
    (("millimeter", "mm"), ("centimeter", "cm")): (10,), (("centimeter", "cm"), ("meter",)): (100,),
    (("millimeter", "mm"), ("meter",)): (1000,), (("meter",), ("kilometer", "km")): (1000,),
    (("milliliter", "ml"), ("liter", "litre")): (1000,),
}
# Days named as a stretch of the week: "Monday to Friday" is 5 days.
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_RANGE = re.compile(rf"\b({'|'.join(_DAYS)})s?\s+(?:to|through|thru|until|till|-|–)\s+({'|'.join(_DAYS)})s?\b",
                        re.IGNORECASE)
_WORD_NUMBER = re.compile(rf"\b({'|'.join(TENS_WORDS)})[- ]({'|'.join(UNITS_WORDS[1:10])})\b"
                          rf"|\b({'|'.join(NUMBER_WORDS)})\b", re.IGNORECASE)
# An ordinal as a fraction ("a third", "two fifths", "a tenth of"), not as a place ("the third street").
_ORDINALS = {"third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10}
_FRACTION_WORD = re.compile(rf"\b(?:a|one|two|three|four|five|six|seven|eight|nine|every|each)[\s-]+({'|'.join(_ORDINALS)})s?\b"
                            rf"|\b({'|'.join(_ORDINALS)})s\b|\b({'|'.join(_ORDINALS)})\s+of\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent\b)", re.IGNORECASE)

# Digits that name a thing: lumber sizes and other dimensions written a x b, numbered things,
# addresses, model names, dates.
_NAMED = "|".join((
    r"(?<![\w.])(\d+)\s*[x×X]\s*(\d+)(?![\w.])",  # "2 x 4", "10x12"
    r"\b(?:Room|Route|Highway|Interstate|Chapter|Grade|Level|Bus|Channel|Apartment|Apt\.?|Suite|Gate|Flight|"
    r"Platform|Model|Version|Season|Episode|Volume|Vol\.|Exit|Track|Floor|Lot|Table|Row|Seat|Section|Station|"
    r"Pier|Terminal|No\.|Number|Year|Class|Unit|Day|Week|Game|Round|Stage|Lane|Aisle|Building|Block|Box|Team|Page)"
    r"\s+#?(\d+)\b",
    r"#\s?(\d+)\b",
    r"\$(\d+)\s+(?:bills?|notes?)\b|\b(\d+)[- ]dollar\s+(?:bills?|notes?)\b",  # a banknote: "$20 bills"
    r"(?<![\w.,$])(\d+)\s*(?:–|—|-|to|through|thru)\s*(\d+)(?![\w.,%])",  # a range: "grades 4 – 7", "ages 3-5"
    r"\bbetween\s+\$?(\d+)\s+and\s+\$?(\d+)\b",
    r"\b(\d+)\s+[A-Z][a-z]+\s+(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Lane|Drive|Dr\.?|Boulevard|Blvd\.?|Way|Court)\b",
    r"\b[A-Za-z]*[a-z][A-Z][A-Za-z]*\s+(\d+)\b",  # "iPhone 12", "PlayStation 5"
    rf"\b(?:{'|'.join(('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'))})"
    r"\s+(\d{1,2})\b(?!\s*(?:%|percent))",  # a date
))
NAMED = re.compile(_NAMED)
# How many parts a kind of thing has: "spiders with 8 legs", "a 4-wheeled cart", "a 6-sided die".
# A fact of the thing, not a quantity of the story: never drawn.
PARTS = re.compile(r"\b(\d+)[\s-]+(?:legs?|legged|wheels?|wheeled|sides?|sided|wings?|eyes?|arms?|tires?|hooves|"
                   r"fingers?|toes?|strings?|corners?|edges?|faces?|horns?|tentacles?|petals?)\b", re.IGNORECASE)
# A time of the clock: "3 pm", "7:30", "9 o'clock", "11am".
CLOCK = re.compile(r"\b(\d{1,2})(?::(\d\d))?\s*(?:a\.?m\.?|p\.?m\.?|AM|PM|A\.M\.|P\.M\.|o'clock)(?![\w])"
                   r"|\b(\d{1,2}):(\d\d)\b", re.IGNORECASE)
TIME_UNITS = ("second", "minute", "hour", "day", "week", "month", "year", "decade", "century", "centuries",
              "night", "morning", "evening", "sec", "min", "hr")
TIME = re.compile(rf"\b((?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?)(?:\s*-\s*|\s+)(?:(?:more|less|fewer|extra|full|whole|"
                  rf"additional|straight|consecutive|long|short|weekly|daily)\s+)?({'|'.join(TIME_UNITS)})s?\b",
                  re.IGNORECASE)


def _word_at_start(lower: str, word: str) -> bool:
    if not word[0].isalpha():
        return word in lower
    return re.search(rf"\b{re.escape(word)}", lower) is not None


def implied_values(question: str) -> dict[Fraction, str]:
    """The values the question's words bring into a solution, each with the word that brings it."""
    lower = question.lower()
    found: dict[Fraction, str] = {Fraction(0): "zero", Fraction(1): "one of a thing"}
    for m in _WORD_NUMBER.finditer(question):
        if m.group(1):
            value = TENS_WORDS[m.group(1).lower()] + UNITS_WORDS.index(m.group(2).lower())
        else:
            value = NUMBER_WORDS[m.group(3).lower()]
        found.setdefault(Fraction(value), m.group(0).lower())
    for word, values in WORD_VALUES.items():
        if _word_at_start(lower, word):
            for value in values:
                found.setdefault(Fraction(value), word)
    for m in _FRACTION_WORD.finditer(question):
        n = _ORDINALS[next(g for g in m.groups() if g).lower()]
        for value in (Fraction(n), Fraction(1, n)):
            found.setdefault(value, m.group(0).lower())
    for (small, big), values in UNIT_PAIRS.items():
        if any(_word_at_start(lower, w) for w in small) and any(_word_at_start(lower, w) for w in big):
            for value in values:
                found.setdefault(Fraction(value), f"{small[0]}s in a {big[0]}")
    if _DAY_RANGE.search(question):
        start, end = (_DAYS.index(g.lower()) for g in _DAY_RANGE.search(question).groups())
        found.setdefault(Fraction((end - start) % 7 + 1), "a stretch of days of the week")
    return found


def percent_forms(question: str) -> dict[Fraction, Fraction]:
    """{decimal: the percentage of the question it is written from}: 20% gives 0.2, and the 0.8
    and 1.2 of 20% off and 20% more."""
    forms: dict[Fraction, Fraction] = {}
    for m in _PERCENT.finditer(question):
        p = Fraction(m.group(1))
        for value in (p / 100, 1 - p / 100, 1 + p / 100):
            if value > 0:
                forms.setdefault(value, p)
    return forms


def naming_spans(question: str) -> dict[tuple[int, int], str]:
    """Spans of digits that name a thing ('name') or a time of the clock ('clock')."""
    spans: dict[tuple[int, int], str] = {}
    for m in NAMED.finditer(question):
        for g in range(1, (m.re.groups or 0) + 1):
            if m.group(g):
                spans[m.span(g)] = "name"
    for m in PARTS.finditer(question):
        spans[m.span(1)] = "parts"
    for m in CLOCK.finditer(question):
        for g in range(1, 5):
            if m.group(g):
                spans[m.span(g)] = "clock"
    return spans


def time_spans(question: str) -> dict[tuple[int, int], str]:
    """Spans of numbers counted in a unit of time ('8 hours', 'a 3-day trip'), with the unit."""
    return {m.span(1): m.group(2).lower() for m in TIME.finditer(question)}
