"""The probe's `names` variants: the same problem with its people renamed, nothing else changed
(the memorization check of the GSM-Symbolic study: a model that solves the original but not a
renamed copy has memorized rather than reasoned).

    rename_people(problem, rng) -> (new question, new solution, {old name: new name}) or None

People are found by a fixed list of first names matched as capitalised whole words (no NLP
dependency: GSM8K's people are almost all common first names). A name that is also an
ordinary word ("Mark", "Bill", "Grant") counts only where it stands mid-sentence somewhere in
the question, where it cannot be the capitalised first word of a sentence. Each person gets
a new name of the same grammatical gender: the one the text shows (he/she) where the question
has one person, else the name's own; a name used for either gets one used for either. Every
occurrence changes, possessives stay right ("James'" becomes "Maria's"), digits and the gold
answer never change.
"""

from __future__ import annotations

import random
import re

FEMALE = ("Alice", "Amanda", "Amy", "Angela", "Anna", "Annie", "Barbara", "Beth", "Betty", "Brenda", "Carla",
          "Carol", "Carrie", "Cathy", "Cindy", "Claire", "Clara", "Diane", "Donna", "Dorothy", "Elena", "Ella",
          "Emily", "Emma", "Fiona", "Gina", "Gloria", "Hannah", "Helen", "Irene", "Janet", "Janice", "Jane", "Jenna",
          "Jennifer", "Jenny", "Jessica", "Jill", "Julia", "Julie", "Karen", "Kate", "Katie", "Kayla", "Kelly",
          "Kendra", "Laura", "Linda", "Lisa", "Lucy", "Madeline", "Maggie", "Maria", "Martha", "Mary", "Megan",
          "Melissa", "Michelle", "Monica", "Nancy", "Natalia", "Natalie", "Nicole", "Nina", "Olivia", "Rachel",
          "Rebecca", "Rita", "Sally", "Samantha", "Sandra", "Sara", "Sarah", "Sophie", "Stephanie", "Susan", "Tanya",
          "Tara", "Tina", "Veronica", "Wendy", "Anne", "Ann", "Vanessa", "Shelly", "Jasmine", "Sophia", "Mia", "Ava",
          "Chloe", "Zoe", "Isabella", "Abigail", "Lauren", "Ashley", "Heather", "Brittany", "Danielle", "Tiffany",
          "Theresa", "Sheila", "Peggy", "Pam", "Polly", "Nora", "Mabel", "Maya", "Layla", "Lydia", "Leila", "Luna",
          "Kylie", "Judy", "Joan", "Lori", "Marie", "Paula", "Ruth", "Sofia", "Valerie", "Yvonne", "Becky",
          "Beatrice", "Cynthia", "Debra", "Elsa", "Greta", "Haley", "Kristin", "Marcy", "Mandy", "Nadia")
MALE = ("Aaron", "Adam", "Alan", "Albert", "Andrew", "Andy", "Anthony", "Ben", "Benjamin", "Billy", "Bob", "Bobby",
        "Brad", "Brian", "Bruce", "Caleb", "Carl", "Carlos", "Charles", "Daniel", "Dave", "David", "Derek", "Diego",
        "Eric", "Fred", "Gary", "George", "Gerald", "Greg", "Harry", "Henry", "Ian", "Ivan", "Jacob", "Jake", "James",
        "Jason", "Jeff", "Jeremy", "Jerry", "Jim", "Jimmy", "Joe", "Joel", "John", "Johnny", "Jose", "Joseph", "Josh",
        "Juan", "Justin", "Kevin", "Kyle", "Larry", "Leo", "Lucas", "Luke", "Marcus", "Mario", "Matt", "Michael",
        "Mike", "Nathan", "Noah", "Oliver", "Patrick", "Paul", "Peter", "Ralph", "Randy", "Richard", "Robert", "Roger",
        "Ryan", "Samuel", "Simon", "Steve", "Steven", "Ted", "Thomas", "Tim", "Todd", "Tom", "Tommy", "Tony", "Tyler",
        "William", "Mitchell", "Mitchel", "Ahmed", "Ali", "Omar", "Hans", "Oscar", "Victor", "Vincent", "Wayne",
        "Walter", "Zachary", "Trevor", "Toby", "Roy", "Ron", "Neil", "Phil", "Ray", "Ricky", "Rick", "Sean", "Shane",
        "Scott", "Kenny", "Kenneth", "Jerome", "Hank", "Maurice", "Nick", "Nathaniel", "Martin", "Gordon", "Dylan",
        "Ethan", "Felix", "Hugo", "Isaac", "Jayden", "Kurt", "Logan", "Manny", "Marco", "Owen", "Raymond", "Sergio")
EITHER = ("Alex", "Casey", "Jamie", "Jess", "Jessie", "Kim", "Pat", "Sam", "Taylor", "Robin", "Riley", "Morgan", "Weng", "Jordan", "Charlie", "Frankie")
ALSO_WORDS = {"Mark": "male", "Bill": "male", "Jack": "male", "Frank": "male", "Grant": "male", "Rob": "male",
              "Rose": "female", "Grace": "female", "Daisy": "female", "Ivy": "female", "Lily": "female"}
GENDER = {**{n: "female" for n in FEMALE}, **{n: "male" for n in MALE}, **{n: "either" for n in EITHER}, **ALSO_WORDS}
POOLS = {"female": FEMALE, "male": MALE, "either": EITHER}
_NAME = re.compile(r"\b([A-Z][a-z]+)\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:\"]\s+|\n)$")
_HE = re.compile(r"\b(?:he|him|his|himself)\b", re.IGNORECASE)
_SHE = re.compile(r"\b(?:she|her|hers|herself)\b", re.IGNORECASE)


def people(question: str) -> list[str]:
    """The people's first names in the question, in order of first mention."""
    found: list[str] = []
    for m in _NAME.finditer(question):
        name = m.group(1)
        if name not in GENDER or name in found:
            continue
        if name in ALSO_WORDS and not any(not _SENTENCE_START.search(question[: n.start()])
                                          for n in re.finditer(rf"\b{name}\b", question)):
            continue  # only ever the first word of a sentence: maybe the verb or the noun
        found.append(name)
    return found


def _replace(text: str, old: str, new: str) -> str:
    # "James'" is the possessive of a name ending in s; "Maria" needs "Maria's".
    text = re.sub(rf"\b{old}'(?!s\b)", new + ("'" if new.endswith("s") else "'s"), text)
    return re.sub(rf"\b{old}\b", new, text)


def rename_people(question: str, solution: str, rng: random.Random) -> tuple[str, str, dict[str, str]] | None:
    """The question and solution with every person renamed; None where no person is found."""
    names = people(question)
    if not names:
        return None
    taken = {n for n in GENDER if re.search(rf"\b{n}\b", question + "\n" + solution)}
    shown = None
    if len(names) == 1:
        he, she = bool(_HE.search(question)), bool(_SHE.search(question))
        shown = "male" if he and not she else "female" if she and not he else None
    mapping: dict[str, str] = {}
    for name in names:
        gender = shown or GENDER[name]
        pool = [n for n in POOLS[gender] if n not in taken and n[0] != name[0]]
        if not pool:
            return None
        mapping[name] = rng.choice(pool)
        taken.add(mapping[name])
    # Longest first, so that "Jessie" is not renamed through "Jess"; \b keeps them apart anyway.
    for old in sorted(mapping, key=len, reverse=True):
        question, solution = _replace(question, old, mapping[old]), _replace(solution, old, mapping[old])
    return question, solution, mapping
