"""The report's sentences for what the analysis decides: definitions of the training measures,
the trend rule, the advice behind each recommendation code, why token accuracy is not exact
match, the paired test's and validation exact match's verdicts, the training methods and their
measures, the contamination measure and the plan's miss. The analysis stores codes and numbers
(analysis.json); this module only puts them in words, filling in the numbers as stored.
"""

from __future__ import annotations

from mathtune.core.analysis_record import Analysis
from mathtune.core.stats import counted, points_text, signed

SIGN = "every decrease is (start - end) / start x 100: positive when the loss fell, negative when it rose"

TREND_RULE = ("overfitting: validation loss rises by more than the threshold over its window while training loss "
              "falls; still improving: validation loss (training loss when there is no validation) falls by more "
              "than the threshold; plateaued: otherwise; not enough points: the deciding window holds fewer points "
              "than it needs")

TOKEN_ACCURACY = ("teacher-forced next-token accuracy on the solution tokens (the model sees the gold prefix at every "
                  "position); NOT problem-solving accuracy. Start and end are the first- and last-window means")

TRAIN_LONGER = "train longer (more train.epochs, or a larger data.train_limit)"

ERROR_ADVICE = {
    "format_failure": "the answers are there but not stated as '#### N'; fix the prompt or train on the answer format",
    "truncated": "raise eval.max_new_tokens or teach the model to stop",
    "arithmetic_slip": ("the reasoning is set up right but computed wrong; a calculator tool or more worked arithmetic "
                        "in training would target it"),
    "missing_or_extra_step": ("the chain stops early or runs one step too far; more multi-step training examples would "
                              "target it"),
    "misread_question": ("the model solves a different problem; this is reasoning, not format, and needs a stronger "
                         "base model or more data"),
}


def loss_decrease_definition(definitions: dict) -> str:
    return ("(smoothed first window - smoothed last window) / smoothed first window x 100, where a window is the mean "
            f"of {definitions['window_fraction_pct']}% of the logged points (at least one)")


def final_stretch_definition(definitions: dict) -> str:
    return (f"decrease of a least-squares line fitted to the losses logged in the last "
            f"{definitions['final_stretch_fraction_pct']}% of the step range (widened to the last "
            f"{definitions['min_train_points']} logged training losses when it holds fewer), in % of its starting "
            "value; validation over the same steps, where it has at least 2 points")


VALIDATION_EXACT_MATCH = ("strict exact match of the same validation problems at every validation point, greedy, "
                         "with the run's evaluation prompt; 95% Wilson intervals; the best step of a rule is its "
                         "first best among the checkpointed points (step 0 excluded), as the Trainer picks it")


RFT_KEPT = ("strictly correct, stopped on its own (not cut by max_new_tokens), fits data.max_length, distinct after "
            "collapsing whitespace; at most keep_per_problem per problem")
RFT_SHARE_FROM_MODEL = "kept solutions written by the model / all training solutions (the rest are gold)"

GRPO_REWARD = ("mean over the step's completions of the weighted rewards (exact_match: 1 when the strict scorer finds "
               "the gold answer)")
GRPO_MIXED_GROUPS = ("share of the step's prompt groups whose completions did not all get the same reward; only those "
                     "carry a learning signal")
GRPO_KL = "mean per-token KL of the policy to the base model (the adapter switched off)"


def grpo_window_definition(grpo: dict) -> str:
    return (f"start and end are the means of the first and last {grpo['window_fraction_pct']}% of the logged steps; "
            "every step draws other prompts, so a change between them mixes what the model learned with how hard "
            "those prompts are")


def plan_miss_text(missed: dict | None) -> str:
    """'on plan', '+38% (actual x1.38 the plan)', or '-' where the miss is unknown."""
    if missed is None:
        return "-"
    if missed["on_plan"]:
        return "on plan"
    return f"{missed['pct']:+d}% (actual x{missed['ratio']:.2f} the plan)"


def accuracy_trend_text(trend: dict) -> str:
    """What validation exact match did over the last validation points (analysis.selection's
    trend, available), paired on the problems where their answers were kept."""
    start, end = trend["start"], trend["end"]
    went = (f"validation exact match went from {start['correct']}/{start['n']} at step {trend['from_step']} "
            f"to {end['correct']}/{end['n']} at step {trend['to_step']}")
    if trend["change"] is None:
        return f"{went} (the per-problem answers are missing, so the change has no paired interval)"
    return (f"{went}: {points_text(trend['change'])}, paired on the same {counted(trend['paired_problems'], 'problem')} "
            f"({trend['solved']} newly solved, {trend['lost']} lost): {trend['verdict']}")


def disagreement_text(disagreement: dict) -> str:
    """The steps validation loss and exact match would keep, where they differ."""
    loss, em = disagreement["by_loss"], disagreement["by_exact_match"]
    return (f"Loss and accuracy disagree on the best step: the validation loss is lowest at step {loss['step']} "
            f"({loss['correct']}/{loss['n']} solved), the exact match highest at step {em['step']} "
            f"({em['correct']}/{em['n']} solved).")


def contamination_definition(c: dict) -> str:
    """The overlap measure of analysis.contamination, naming every training source it read."""
    return (f"share of each test question's word {c['n']}-grams (lower-cased letters and digits) that occur in any "
            "question of the training split" + (" or of a data.mix source" if len(c["per_source"]) > 1 else ""))


def _moved(moved: dict | None) -> str:
    """'fell 2.3%', 'rose 2.3%', 'did not change'."""
    if moved is None:
        return "n/a"
    return moved["direction"] if moved["direction"] == "did not change" else f"{moved['direction']} {moved['pct']:.1f}%"


def _count(n: int, word: str) -> str:
    """'1 step', '3 steps'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _how_to_get_a_verdict(step: dict) -> str:
    have, needs = step["have"], step["needs"]
    if step["advice"] == "more training points":
        head = f"Not enough training-loss points for a verdict: {have} logged, and the trend needs {needs}."
        every = step["logging_steps"]
        if every is not None and every > 1:
            return f"{head} To get one, log more often (train.logging_steps, now {every}) or {TRAIN_LONGER}."
        return f"{head} Every step is logged already; to get one, {TRAIN_LONGER}."
    head = f"Not enough validation points for a verdict: {_count(have, 'evaluation')}, and the trend needs the last {needs}."
    steps, every = step["steps"], step["eval_every_steps"]
    if not steps:
        return f"{head} To get one, validate more often (train.eval_every_steps) or {TRAIN_LONGER}."
    if "suggest_eval_every_steps" in step:
        suggest = step["suggest_eval_every_steps"]
        now = f", now {every}" if every is not None else ""
        return (f"{head} To get one, set train.eval_every_steps to {suggest}{' or less' if suggest > 1 else ''} "
                f"(this run took {_count(steps, 'step')}{now}), or {TRAIN_LONGER}.")
    return (f"{head} This run took {_count(steps, 'step')}, validating every {_count(every, 'step')} "
            f"(train.eval_every_steps: {every}), and {needs} evaluations take {step['steps_needed']} steps or "
            f"more. To get one, {TRAIN_LONGER}.")


def _loss_advice(trend: dict, step: dict) -> str:
    if step["advice"] in ("more validation points", "more training points"):
        return _how_to_get_a_verdict(step)
    val_dec, train_dec = trend["validation_decrease_pct"], trend["train_decrease_pct"]
    window, threshold = trend["validation_window_steps"], trend["definition"]["threshold_pct"]
    val_text = (f"validation loss {_moved(step['validation_loss_moved'])} over the last {trend['validation_points_used']} evaluations "
                f"(steps {window[0]} to {window[1]})" if val_dec is not None else "")
    train_text = (f"training loss {_moved(step['train_loss_moved'])} over the final stretch ({trend['train_points_used']} "
                  "logged points)" if train_dec is not None else "")
    decider, other = (val_text, train_text) if val_dec is not None else (train_text, "")
    other = f"; {other}" if other else ""
    facts = "; ".join(t for t in (val_text, train_text) if t)
    if step["advice"] == "overfitting":
        at = f" (epoch {step['best_epoch']})" if step["best_epoch"] is not None else ""
        return (f"Overfitting: {facts}. Keep the checkpoint from step {step['best_step']}{at} with validation loss "
                f"{step['best_eval_loss']}; more epochs would make it worse. Train for fewer epochs or regularize more "
                "(higher LoRA dropout, lower learning rate) instead.")
    if step["advice"] == "still improving":
        more = f" than the {step['epochs']} used" if step["epochs"] is not None else ""
        stopped = " even though early stopping fired" if step["stopped_early"] else ""
        return (f"Still improving: {decider}, more than the {threshold}% threshold{stopped}{other}. "
                f"More epochs{more} are likely to lower the validation loss further; whether that lifts "
                "benchmark exact match must be measured, not assumed.")
    return (f"Plateaued: {decider}, within the {threshold}% threshold{other}. More epochs of the same recipe are "
            f"unlikely to help; the best checkpoint is step {step['best_step']} (validation loss "
            f"{step['best_eval_loss']}). Change the recipe instead (learning rate, LoRA rank, data) to go further.")


def training_advice(trend: dict, step: dict, exact_match: dict | None = None) -> str:
    """What to do next after training (analysis.training's recommendation code `step`), quoting
    the numbers behind the verdict, each named with its window; where validation exact match was
    measured, what the problems solved say too."""
    text = _loss_advice(trend, step)
    em_step = step.get("exact_match")
    if em_step is None:
        return text
    advice = {
        "more problems solved": "more training may solve more problems",
        "fewer problems solved": (f"more training of this recipe loses problems; the adapter kept is step "
                                  f"{em_step['kept_step']}'s"),
        "no change in problems solved shown": "more epochs are not shown to solve more problems at this size",
        "not paired": "without the per-problem answers no interval says whether that is more than chance",
    }[em_step["verdict"]]
    return f"{text} Judged by problems solved: {accuracy_trend_text((exact_match or {})['trend'])}; {advice}."


PAIRED_READINGS = {"better": "the tuned model is better", "worse": "the tuned model is worse",
                   "no reliable difference": "the benchmark shows no reliable difference (the interval contains 0)"}


def paired_verdict_text(paired: dict) -> str:
    """The paired test of tuned against base on strict accuracy (analysis.benchmark's verdict
    code) with its numbers."""
    s = paired["strict"]
    lo, hi = s["ci95_pp"]
    return (f"Strict accuracy changed by {signed(s['difference_pp'])} points (paired bootstrap "
            f"{paired['ci_level_pct']}% interval {lo} to {hi}; exact McNemar p {s['mcnemar_p_display']}; "
            f"{counted(s['improved'], 'problem')} improved, {s['regressed']} regressed, out of {paired['n_paired']}): "
            f"{PAIRED_READINGS[paired['verdict']]}.")


def recommendation_text(item: dict, analysis: Analysis) -> str:
    """One entry of analysis.json's recommendations (an advice code with its numbers) in words."""
    advice = item["advice"]
    if advice == "training":
        training = analysis.training
        return training_advice(training["trend"], training["recommendation"], training.get("exact_match"))
    if advice == "paired":
        return paired_verdict_text(analysis.benchmark["paired"])
    if advice == "rft samples too long":
        n = item["count"]
        return (f"{n} distinct strictly correct RFT sample{'s were' if n > 1 else ' was'} longer than "
                f"data.max_length={item['max_length']} tokens and not trained on; a larger data.max_length "
                f"would keep {'them' if n > 1 else 'it'}.")
    if advice == "rft few model solutions":
        r = analysis.recipe["rft"]
        return (f"Only {r['share_from_model_pct']}% of the RFT training solutions came from the model "
                f"({r['kept_from_model']} of {r['solutions_kept']}; {r['problems_with_correct_sample']} of "
                f"{counted(r['problems'], 'problem')} had a strictly correct sample in {r['samples_per_problem']}): more samples "
                "per problem (train.rft.samples) would make it more RFT and less SFT.")
    if advice == "grpo few mixed groups":
        return (f"Only {analysis.recipe['grpo']['mixed_groups_mean_pct']}% of GRPO's prompt groups had mixed "
                "rewards on average: the rest were all right or all wrong and taught nothing. A larger "
                "train.grpo.group_size, or problems nearer the model's level, would give more signal per step.")
    if advice == "top error":
        return (f"The {item['model']} model's most common error is {item['category'].replace('_', ' ')} "
                f"({item['count']} of {item['wrong']} wrong answers, {item['share_pct']}%): "
                f"{ERROR_ADVICE[item['category']]}.")
    if advice == "diverged":
        lr = item.get("learning_rate")
        lower = f"a lower train.learning_rate (it was {lr:g}; try {lr / 4:g})" if lr else "a lower train.learning_rate"
        dtype = ", model.dtype bfloat16 or float32 instead of float16" if item.get("dtype") == "float16" else ""
        return (f"Training diverged at step {item['step']} ({item['metric']} {item['value']}), so this run has no "
                f"tuned model: train again with {lower}{dtype}, or look for a bad training line (an empty or huge "
                "answer), with --overwrite or another --out.")
    if advice == "contamination":
        c = analysis.contamination
        return (f"Test questions sharing at least half of their {c['n']}-grams with training questions: "
                f"{c['test_questions_half_overlapping']} of {c['test_questions']}; check them before trusting the "
                "benchmark.")
    raise ValueError(f"no words for the recommendation code {advice!r}")


def seed_claim_text(claim: dict) -> str:
    """Why teacher-forced token accuracy and exact match differ, with the run's own two numbers."""
    token = claim[f"token_accuracy_{claim['token_accuracy_quoted']}_end_pct"]
    return (f"Mean token accuracy ({token}%) is teacher-forced: at every position the model is handed the gold "
            "solution so far and only has to guess the next token, so one wrong digit costs one token; exact match "
            f"on {claim['data_name']} ({claim['gsm8k_exact_match_strict_pct']}%) makes the model write the whole "
            "solution itself, where one early mistake carries through to a wrong final number.")
