"""The prompt kinds: what each prompt format is. One entry per kind; task.prompts renders a
prompt from its entry, and the rest of the code asks the entry (a chat template or not, the
exemplars and where they come from, a second self-check turn, the stop strings, the protocol
text) and never the kind's name.

* chat        -- zero-shot through the tokenizer's chat template; asks for step-by-step work
                 and a final line `#### N` (or the answer form the training data uses, such as
                 `The answer is: N`: task.answers). Training uses the same rendered prompt with
                 the gold solution as the assistant turn.
* chat-verify -- chat, then a second user turn asking the model to check its work (evaluation
                 only); scored on the final turn.
* cot8        -- the 8 fixed chain-of-thought exemplars of Wei et al. (2022), as used by the
                 field's reference GSM8K CoT evaluation: "Q: ...\\nA: ... The answer is N."
                 joined by blank lines, ending in "Q: {question}\\nA:".
* plain5      -- "Question: ...\\nAnswer: ..." with 5 exemplars drawn (seeded) from the train
                 split, ending in "Question: {question}\\nAnswer:".

A prompt kind is one `register_prompt_kind(name, PromptKind(...))`; its name is then a value
data.prompt (when `trainable`) and eval.prompt accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.config import EVAL_PROMPTS, PROMPTS, add_kind_name
from mathtune.core.kinds import KindTable
from mathtune.task.answers import HASH_FORM

# Turn-end markers of the chat models we target, and the start of a hallucinated next
# question in the few-shot formats. Generation stops at the first of them in each row.
CHAT_STOPS = ("<|im_end|>", "<|endoftext|>", "</s>")


@dataclass(frozen=True)
class PromptKind:
    """What differs between the prompt formats; a chat kind renders through the chat template,
    a few-shot kind as `labels[0] question\\nlabels[1] solution` exemplars joined by blank lines."""
    description: str  # the protocol line's words for it (a summary's, the report's)
    stops: tuple[str, ...]  # where generation stops (a chat kind adds its template's turn end)
    chat: bool = False  # zero-shot through the chat template, asking for the answer form
    second_turn: bool = False  # a second user turn asks the model to check its work; scored on it
    trainable: bool = True  # data.prompt may name it (a second turn is evaluation's alone)
    labels: tuple[str, str] = ("Q:", "A:")  # a few-shot kind's question and answer labels
    exemplars: tuple[tuple[str, str], ...] = ()  # fixed (question, solution) exemplars
    shots_from_train: int = 0  # exemplars drawn (seeded) from the train split instead, this many

    def describe(self, answer_form: str = HASH_FORM) -> str:
        """The description, naming the answer form a chat prompt asks for when it is the
        training data's own rather than GSM8K's."""
        if not self.chat or answer_form == HASH_FORM:
            return self.description
        asked = f"'{answer_form}', the training data's answer form"
        if "'#### N'" in self.description:
            return self.description.replace("'#### N'", asked)
        return f"{self.description}; asks for {asked}"


PROMPT_KIND_TABLE: KindTable[PromptKind] = KindTable("prompt")


def register_prompt_kind(name: str, kind: PromptKind) -> PromptKind:
    """Add a prompt kind: its name becomes a value eval.prompt (and, when trainable, data.prompt) accepts."""
    PROMPT_KIND_TABLE.register(name, kind)
    add_kind_name(EVAL_PROMPTS, name)
    if kind.trainable:
        add_kind_name(PROMPTS, name)
    return kind


COT8_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. "
        "So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
        "How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, "
        "from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)

register_prompt_kind("chat", PromptKind(
    description="zero-shot chat template, asks for '#### N'", stops=CHAT_STOPS, chat=True))
register_prompt_kind("cot8", PromptKind(
    description="8-shot chain-of-thought (Wei et al. exemplars)", stops=("Q:", "\n\n\n") + CHAT_STOPS,
    exemplars=COT8_EXEMPLARS))
register_prompt_kind("plain5", PromptKind(
    description="5-shot 'Question:/Answer:' exemplars from the train split", stops=("Question:", "\n\n\n") + CHAT_STOPS,
    labels=("Question:", "Answer:"), shots_from_train=5))
register_prompt_kind("chat-verify", PromptKind(
    description="zero-shot chat template, then a second turn asking the model to check its work; scored on the final "
                "turn", stops=CHAT_STOPS, chat=True, second_turn=True, trainable=False))
assert PROMPT_KIND_TABLE.names() == tuple(EVAL_PROMPTS), "every prompt named in config has its entry here"
