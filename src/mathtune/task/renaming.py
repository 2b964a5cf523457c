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


# Where a listed name is no person: a place or a business named after one ("San Jose", "Lake
# Tahoe"-like names, "Kelly Street", "Joe's Pizza", "Wendy's Restaurant").
_PLACE_BEFORE = re.compile(r"\b(?:San|Santa|St\.?|Saint|Mount|Mt\.?|Lake|Port|Fort|Cape|Glen|Camp|Club|Hotel|Team|"
                           r"Planet|Hurricane|Storm|Tropical)\s+$")
_PLACE_AFTER = re.compile(
    r"^(?:'s?)?\s+(?:Street|St\b|Avenue|Ave\b|Road|Rd\b|Lane|Drive|Boulevard|Blvd|County|City|Park|River|Island|"
    r"Beach|Bay|Hills?|Valley|Creek|Mountains?|Square|Hall|School|High|Elementary|Middle|University|College|Hospital|"
    r"Center|Centre|Mall|Store|Shop|Bakery|Cafe|Café|Restaurant|Diner|Pizza|Pizzeria|Market|Airlines?|Inc\b|Company|"
    r"Co\b|Corp|Farms?|Ranch|Zoo|Museum|Library|Church|Heights|Falls|Springs|Village|Town|Bridge|Station|Theater|"
    r"Theatre|Hotel|Motel|Inn|Grill|Burgers?|Kitchen|Deli|Club|Gym|Academy|Institute|Stadium|Arena|Gardens?|State|"
    r"Hardware|Pharmacy|Books?|Toys?|Motors|Auto|Salon|Bank|Bakeries|Foods?|Cookies|Candies|Candy|Ice Cream|Donuts|"
    r"Doughnuts|Coffee|Tacos?|Sandwiches|Subs|Lemonade|Garage|Nursery|Supermarket|Grocery|Groceries|Department|"
    r"Orchard|Dairy|Tree Farm|Pet|Pets|Boutique|Emporium|Outlet|Plaza|Court|Place|Lodge|Resort|Camp|Cove|Harbor|"
    r"Harbour|Point|Ridge|Woods|Forest|Fields?)\b")
# Titles and relations that show a person's gender: the new name must agree with them.
_MALE_CUES = (r"Mr\.?|Mister|Sir|Uncle|Grandpa|Grandfather|King|Prince|Lord|Father|Dad|Brother|brother|son|father|"
              r"dad|husband|boyfriend|uncle|nephew|grandson|grandfather|grandpa|stepson|stepfather|king|prince|boy|"
              r"man|gentleman|fiance")
_FEMALE_CUES = (r"Mrs\.?|Ms\.?|Miss|Madam|Aunt|Auntie|Grandma|Grandmother|Queen|Princess|Lady|Mother|Mom|Sister|sister|"
                r"daughter|mother|mom|wife|girlfriend|aunt|niece|granddaughter|grandmother|grandma|stepdaughter|"
                r"stepmother|queen|princess|girl|woman|lady|fiancee")
_CUE_BEFORE = {"male": re.compile(rf"\b(?:{_MALE_CUES}),?\s+$"), "female": re.compile(rf"\b(?:{_FEMALE_CUES}),?\s+$")}
_CUE_AFTER = {"male": re.compile(rf"^,\s+(?:(?:his|her|their|my|your|our|a|the)\s+)?(?:{_MALE_CUES})\b"),
              "female": re.compile(rf"^,\s+(?:(?:his|her|their|my|your|our|a|the)\s+)?(?:{_FEMALE_CUES})\b")}
RENAME_SKIP_REASONS = {
    "name_also_a_place": "a person's name is also the name of a place or a business in the question",
    "title_disagrees": "a title or relation beside a name disagrees with the name's gender ('Mr.' before a woman's "
                       "name)",
    "name_in_other_casing": "a person's name also stands in the text in another casing ('joe'), which a renaming "
                            "would leave behind",
    "no_new_name": "no unused name of the right gender is left",
}


def _places(question: str, name: str) -> tuple[int, int]:
    """(occurrences of the name as a place or a business, occurrences in all)."""
    place = total = 0
    for m in re.finditer(rf"\b{name}\b", question):
        total += 1
        place += bool(_PLACE_BEFORE.search(question[: m.start()]) or _PLACE_AFTER.match(question[m.end():]))
    return place, total


def _cue(text: str, name: str) -> set[str]:
    """The genders the titles and relations beside the name show."""
    found = set()
    for m in re.finditer(rf"\b{name}\b", text):
        for gender in ("male", "female"):
            if _CUE_BEFORE[gender].search(text[max(0, m.start() - 40): m.start()]) or \
                    _CUE_AFTER[gender].match(text[m.end(): m.end() + 60]):
                found.add(gender)
    return found


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
        place, total = _places(question, name)
        if place == total:
            continue  # a place or a business, no person
        found.append(name)
    return found


def _replace(text: str, old: str, new: str) -> str:
    # "James'" is the possessive of a name ending in s; "Maria" needs "Maria's".
    text = re.sub(rf"\b{old}'(?!s\b)", new + ("'" if new.endswith("s") else "'s"), text)
    return re.sub(rf"\b{old}\b", new, text)


def rename_people(question: str, solution: str, rng: random.Random) -> tuple[str, str, dict[str, str]] | str:
    """The question and solution with every person renamed, or the reason no renaming is sound
    ("no_person_name" where no person is found)."""
    names = people(question)
    if not names:
        return "no_person_name"
    both = question + "\n" + solution
    taken = {n for n in GENDER if re.search(rf"\b{n}\b", both, re.IGNORECASE)}
    shown = None
    if len(names) == 1:
        he, she = bool(_HE.search(question)), bool(_SHE.search(question))
        shown = "male" if he and not she else "female" if she and not he else None
    mapping: dict[str, str] = {}
    for name in names:
        place, _ = _places(question, name)
        if place:
            return "name_also_a_place"
        cue = _cue(both, name)
        if len(cue) > 1 or cue and GENDER[name] != "either" and cue != {GENDER[name]}:
            return "title_disagrees"
        # A listed name keeps its gender; a name used for either takes the one its titles, or
        # the pronouns of a question with one person, show.
        gender = GENDER[name] if GENDER[name] != "either" else (next(iter(cue)) if cue else shown or "either")
        pool = [n for n in POOLS[gender] if n not in taken and n[0] != name[0]]
        if not pool:
            return "no_new_name"
        mapping[name] = rng.choice(pool)
        taken.add(mapping[name])
    # Longest first, so that "Jessie" is not renamed through "Jess"; \b keeps them apart anyway.
    for old in sorted(mapping, key=len, reverse=True):
        question, solution = _replace(question, old, mapping[old]), _replace(solution, old, mapping[old])
    if any(re.search(rf"\b{old}\b", question + "\n" + solution, re.IGNORECASE) for old in mapping):
        return "name_in_other_casing"
    return question, solution, mapping
