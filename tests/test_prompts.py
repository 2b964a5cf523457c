from transformers import AutoTokenizer

from mathtune.task.data import load_split
from mathtune.task.prompt_kinds import COT8_EXEMPLARS
from mathtune.task.prompts import make_prompt_builder, training_pair


def test_cot8_is_the_fixed_eight_exemplars():
    text = make_prompt_builder("cot8").render("How many?")
    assert len(COT8_EXEMPLARS) == 8
    assert text.startswith("Q: There are 15 trees in the grove.")
    assert text.count("The answer is") == 8
    assert text.endswith("\n\nQ: How many?\nA:")
    assert "\n\nQ: If there are 3 cars" in text


def test_plain5_is_seeded_and_from_train(small_data_dir):
    train = load_split(str(small_data_dir), "train")
    a = make_prompt_builder("plain5", train=train, seed=1).render("How many?")
    b = make_prompt_builder("plain5", train=train, seed=1).render("How many?")
    c = make_prompt_builder("plain5", train=train, seed=2).render("How many?")
    assert a == b and a != c
    assert a.count("Question: ") == 6 and a.endswith("Question: How many?\nAnswer:")
    assert "<<" not in a  # calculator annotations removed


def test_training_prompt_is_the_evaluation_prompt(tiny_model_dir, small_data_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    problem = load_split(str(small_data_dir), "train")[0]
    prompt, completion = training_pair(problem, tok)
    assert prompt == make_prompt_builder("chat").render(problem.question, tok)
    assert prompt.endswith("<|im_start|>assistant\n") and problem.question in prompt
    assert completion.endswith("#### " + problem.gold + "<|im_end|>")
    assert "<<" not in completion


def test_chat_prompt_with_qwen_template():
    from families import qwen_tokenizer_folder

    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_folder())
    text = make_prompt_builder("chat").render("What is 2+2?", tok)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
