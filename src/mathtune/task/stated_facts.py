"""Numbers a question states as facts of the calendar or of units, and the bounds those
units put on the question's other numbers: what the probe's variants must not change.

    fixed_numbers(question) -> {(start, end): why} for "28 days in the month", "7 days a week",
                               "12 inches in a foot", "in 2019"; and the upper bound of
                               "8 hours a day" (24), "6 days a week" (7), "12 years old" (100)

A question that says "there are 31 days in March" states a fact, not a free parameter: a
variant with 41 days in March is no longer a problem about March. Written by hand: no library
we use reads unit facts out of prose; a small table of the units grade-school problems use
covers them.
"""

from __future__ import annotations

import re

# (unit, container) -> how many units the container holds; several values where the
# container varies (a month has 28 to 31 days). Singular names; PLURALS maps the rest.
UNIT_FACTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("second", "minute"): (60,), ("second", "hour"): (3600,), ("minute", "hour"): (60,),
    ("minute", "day"): (1440,), ("hour", "day"): (24,), ("hour", "week"): (168,), ("day", "week"): (7,),
    ("day", "month"): (28, 29, 30, 31), ("day", "year"): (365, 366), ("week", "year"): (52,),
    ("month", "year"): (12,), ("year", "decade"): (10,), ("year", "century"): (100,), ("week", "month"): (4,),
    ("inch", "foot"): (12,), ("inch", "yard"): (36,), ("foot", "yard"): (3,), ("foot", "mile"): (5280,),
    ("yard", "mile"): (1760,), ("cent", "dollar"): (100,), ("penny", "dollar"): (100,), ("nickel", "dollar"): (20,),
    ("dime", "dollar"): (10,), ("quarter", "dollar"): (4,), ("ounce", "pound"): (16,), ("pound", "ton"): (2000,),
    ("ounce", "cup"): (8,), ("cup", "pint"): (2,), ("pint", "quart"): (2,), ("cup", "quart"): (4,),
    ("quart", "gallon"): (4,), ("pint", "gallon"): (8,), ("cup", "gallon"): (16,), ("ounce", "gallon"): (128,),
    ("teaspoon", "tablespoon"): (3,), ("gram", "kilogram"): (1000,), ("milligram", "gram"): (1000,),
    ("millimeter", "centimeter"): (10,), ("centimeter", "meter"): (100,), ("millimeter", "meter"): (1000,),
    ("meter", "kilometer"): (1000,), ("milliliter", "liter"): (1000,),
}
MONTH_DAYS = {"january": (31,), "february": (28, 29), "march": (31,), "april": (30,), "may": (31,), "june": (30,),
              "july": (31,), "august": (31,), "september": (30,), "october": (31,), "november": (30,),
              "december": (31,)}
for _month, _days in MONTH_DAYS.items():
    UNIT_FACTS[("day", _month)] = _days
PLURALS = {"seconds": "second", "minutes": "minute", "hours": "hour", "days": "day", "weeks": "week",
           "months": "month", "years": "year", "decades": "decade", "centuries": "century", "inches": "inch",
           "feet": "foot", "yards": "yard", "miles": "mile", "cents": "cent", "pennies": "penny",
           "nickels": "nickel", "dimes": "dime", "quarters": "quarter", "dollars": "dollar", "ounces": "ounce",
           "pounds": "pound", "tons": "ton", "cups": "cup", "pints": "pint", "quarts": "quart", "gallons": "gallon",
           "teaspoons": "teaspoon", "tablespoons": "tablespoon", "grams": "gram", "kilograms": "kilogram",
           "milligrams": "milligram", "millimeters": "millimeter", "centimeters": "centimeter", "meters": "meter",
           "kilometers": "kilometer", "milliliters": "milliliter", "liters": "liter", "litres": "liter",
           "mins": "minute", "min": "minute", "hrs": "hour", "hr": "hour", "oz": "ounce", "lbs": "pound",
           "lb": "pound", "ft": "foot", "in": "inch", "kg": "kilogram", "g": "gram", "ml": "milliliter",
           "cm": "centimeter", "mm": "millimeter", "km": "kilometer", "qt": "quart", "gal": "gallon"}
MAX_AGE = 100

_NUMBER = r"(?<![\w.,$:/])(\d{1,3}(?:,\d{3})+|\d+)(?![\w:/]|\.\d|,\d{3})"
_UNITS = sorted({u for u, _ in UNIT_FACTS} | set(PLURALS), key=len, reverse=True)
_CONTAINERS = sorted({c for _, c in UNIT_FACTS}, key=len, reverse=True)
_UNIT = "|".join(_UNITS)
_CONTAINER = "|".join(_CONTAINERS)
_ARTICLE = r"(?:(?:a|an|one|1|the|each|every|per|in|of|to|=|equals?|makes?(?: up)?|is|are)\s+)"
# "28 days in the month", "7 days a week", "12 inches = 1 foot", "60 minutes per hour"
UNIT_FIRST = re.compile(rf"{_NUMBER}[\s-]*({_UNIT})\b\s*{_ARTICLE}{{0,3}}({_CONTAINER})\b", re.IGNORECASE)
# "a week has 7 days", "1 foot = 12 inches", "each hour has 60 minutes"
CONTAINER_FIRST = re.compile(rf"\b(?:a|an|one|1|each|every|there)\s+({_CONTAINER})\s+"
                             rf"(?:has|have|is|equals?|=|contains|holds|is equal to|are)\s+(?:about\s+)?"
                             rf"{_NUMBER}\s*({_UNIT})\b", re.IGNORECASE)
DOZEN = re.compile(rf"{_NUMBER}\s+(?:\w+\s+)?(?:in|per|make(?:s)?)\s+(?:a|one|each)\s+dozen\b", re.IGNORECASE)
AGE = re.compile(rf"{_NUMBER}[\s-]*years?[\s-]+(?:old|older|younger)\b|\bage of {_NUMBER}|\baged? {_NUMBER}\b"
                 rf"|\bwhen (?:he|she|they|I|we|you|[A-Z][a-z]+) (?:was|were|is|turns|turned) {_NUMBER}"
                 rf"|\b(?:is|was|will be) {_NUMBER}(?=\s+(?:now|today|years)\b)"
                 rf"|\b(?:turns?|turned) {_NUMBER}")
# A year of the calendar, "in 2019", "since 1995": changed, it is another date, and ten
# times larger it is nonsense.
YEAR = re.compile(r"\b(?:in|since|from|until|by|year|of|before|after|during|to|through) "
                  r"(1[6-9]\d\d|20\d\d)(?![\w,]|\.\d)", re.IGNORECASE)


def _unit(word: str) -> str:
    word = word.lower()
    return PLURALS.get(word, word)


def fixed_numbers(question: str) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], int]]:
    """(held, bounds): the spans of numbers the question states as facts ({span: 'unit_fact' |
    'year'}), and the upper bound a unit puts on other numbers ({span: bound}: the 8 of "8 hours
    a day" may become 20, not 30)."""
    held: dict[tuple[int, int], str] = {}
    bounds: dict[tuple[int, int], int] = {}

    def judge(span: tuple[int, int], text: str, unit: str, container: str) -> None:
        facts = UNIT_FACTS.get((_unit(unit), container.lower()))
        if not facts:
            return
        value = int(text.replace(",", ""))
        if value in facts:
            held[span] = "unit_fact"
        else:
            bounds[span] = min(bounds.get(span, max(facts)), max(facts))

    for m in UNIT_FIRST.finditer(question):
        judge(m.span(1), m.group(1), m.group(2), m.group(3))
    for m in CONTAINER_FIRST.finditer(question):
        judge(m.span(2), m.group(2), m.group(3), m.group(1))
    for m in DOZEN.finditer(question):
        if m.group(1) == "12":
            held[m.span(1)] = "unit_fact"
    for m in AGE.finditer(question):
        for g in range(1, (m.re.groups or 0) + 1):
            if m.group(g):
                bounds[m.span(g)] = min(bounds.get(m.span(g), MAX_AGE), MAX_AGE)
    for m in YEAR.finditer(question):
        held[m.span(1)] = "year"
    return held, bounds
