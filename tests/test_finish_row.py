"""How a decoded row ends (models.generate.finish_row, used by generate_batch and the engine):
where its text is cut, what its token count holds, when it counts as truncated."""

from mathtune.models.generate import Generation, finish_row


class Letters:
    """A tokenizer whose token i is the i-th character of its alphabet."""

    alphabet = "abc Q:\n."

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(self.alphabet[t] for t in tokens)


def ids(text: str) -> list[int]:
    return [Letters.alphabet.index(c) for c in text]


def test_a_stop_token_counts_as_produced_and_is_not_truncation():
    assert finish_row(Letters(), ids("abc"), True, ("Q:",), 10) == Generation("abc", 4, False)
    # a stop token as the last allowed token: counted up to max_new_tokens, still not truncated
    assert finish_row(Letters(), ids("abcab"), True, (), 5) == Generation("abcab", 5, False)


def test_the_text_is_cut_at_the_first_stop_string_and_the_count_keeps_every_token():
    assert finish_row(Letters(), ids("ab.\nQ: c"), False, ("Q:", "\n"), 20) == Generation("ab.", 8, False)


def test_running_to_max_new_tokens_without_a_stop_is_truncation():
    assert finish_row(Letters(), ids("abcab"), False, ("Q:",), 5) == Generation("abcab", 5, True)
    # ... unless the text holds a stop string: the row ended there, the rest is cut away
    assert finish_row(Letters(), ids("abQ:a"), False, ("Q:",), 5) == Generation("ab", 5, False)


def test_a_row_shorter_than_the_budget_is_not_truncated():
    assert finish_row(Letters(), ids("ab"), False, ("Q:",), 5) == Generation("ab", 2, False)
    assert finish_row(Letters(), [], True, ("Q:",), 5) == Generation("", 1, False)
