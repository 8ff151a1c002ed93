"""Task registry: one frozen, versioned :class:`TaskSpec` per classification task.

A task fixes what the rest of lorank needs to know about a data set: the label strings in a fixed
order (label index ``y ∈ {0, …, K−1}`` is a position in :attr:`TaskSpec.labels`), the number of
logits K, the metrics, the LM-BFF prompt template with its label words (Gao, Fisch, Chen 2021,
"Making Pre-trained Language Models Better Few-shot Learners", Table 1; reused by Malladi et al.
2023 and Jang, Lee, Ryu 2024) and a label-description verbaliser for encoders without an MLM head
(logit_k(x) = ⟨e(x), e(v_k)⟩/τ, science notes §5).

Built-in GLUE tasks keep the label order of GLUE / the Hugging Face ``glue`` config, so a hub
label id is already a lorank label index. Adding a task is one ``TaskSpec(...)`` entry in
:data:`BUILTIN_TASKS`; a user's own task is built at run time with :func:`custom_task`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lorank.errors import LorankError

MASK = "{mask}"
METRICS = ("accuracy", "f1")


@dataclass(frozen=True)
class LmbffFiles:
    """Where a task lives in an LM-BFF ``k-shot/<folder>/<k>-<seed>/`` directory.

    ``text_columns`` and ``label_column`` are header names (the files are read by header, so
    column order such as MRPC's label-first layout does not matter); ``test_rows`` is the row
    count of the original GLUE dev set that LM-BFF uses as test (None: not checked).
    """

    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"
    test_rows: int | None = None


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub (``datasets.load_dataset(path, name)``).

    ``label_names`` are the hub's ClassLabel names in hub id order; they must line up with the
    task's labels one to one (checked on load).
    """

    path: str
    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "validation"


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: K = len(labels) classes, texts, metrics, prompt and verbaliser.

    Attributes:
        name: canonical name (``"SST-2"``).
        labels: label strings in a fixed order; label index y is the position in this tuple.
        text_fields: names of the text fields, ``("sentence",)`` or two names for pair tasks.
        metrics: ``("accuracy",)`` or ``("accuracy", "f1")`` (binary F1 of label index 1).
        template: prompt with ``{text_a}``, optionally ``{text_b}``, and one ``{mask}``.
        label_words: one word per label filling ``{mask}`` (LM-BFF label words).
        label_descriptions: one short sentence per label for embedding heads.
        aliases: extra names accepted by :func:`get_task` (matching ignores case, ``-``, ``_``).
        version: bump when any field changes meaning; part of :attr:`fingerprint`.
        lmbff: LM-BFF folder layout, or None.
        hub: Hugging Face hub source, or None.
    """

    name: str
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    template: str
    label_words: tuple[str, ...]
    label_descriptions: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    aliases: tuple[str, ...] = ()
    version: int = 1
    lmbff: LmbffFiles | None = None
    hub: HubSource | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key in ("labels", "text_fields", "label_words", "label_descriptions", "metrics",
                    "aliases"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        _check_spec(self)

    @property
    def K(self) -> int:
        """Number of classes (= output logits of a prompt or verbaliser head)."""
        return len(self.labels)

    @property
    def primary_metric(self) -> str:
        """The metric the task's benchmark reports first: binary F1 of label index 1 when the
        task reports F1 (MRPC and QQP in GLUE / LM-BFF), else accuracy. Dev selection and the
        report's headline use it; accuracy is always reported beside it."""
        return "f1" if "f1" in self.metrics else "accuracy"

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (two text fields)."""
        return len(self.text_fields) == 2

    @property
    def fingerprint(self) -> str:
        """Short sha256 of every semantic field: a cache key that changes when the spec does."""
        payload = {k: v for k, v in asdict(self).items() if k != "description"}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def label_word_map(self) -> dict[str, str]:
        """Label string -> LM-BFF label word (``{"0": "terrible", "1": "great"}``)."""
        return dict(zip(self.labels, self.label_words, strict=True))

    def label_index(self, label: str) -> int:
        """Index y of a label string; LorankError if it is not one of :attr:`labels`."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise LorankError(
                f"label {label!r} is not a label of task {self.name} "
                f"(labels: {', '.join(self.labels)})"
            ) from None

    def prompt(self, text_a: str, text_b: str | None = None, mask: str = "<mask>") -> str:
        """Fill the template, e.g. ``"{text_a} It was {mask} ."`` -> ``"fun It was <mask> ."``."""
        if self.is_pair and text_b is None:
            raise LorankError(f"task {self.name} is a sentence-pair task: text_b is required")
        return self.template.format(text_a=text_a, text_b=text_b or "", mask=mask)


def _check_spec(spec: TaskSpec) -> None:
    """Validate a spec's internal consistency (raises LorankError with one line)."""
    where = f"task {spec.name!r}"
    if not spec.name.strip():
        raise LorankError("a task needs a non-empty name")
    if len(spec.labels) < 2:
        raise LorankError(f"{where}: needs at least two labels, got {list(spec.labels)}")
    if any(not isinstance(x, str) or not x.strip() for x in spec.labels):
        raise LorankError(f"{where}: labels must be non-empty strings, got {list(spec.labels)}")
    if len(set(spec.labels)) != len(spec.labels):
        raise LorankError(f"{where}: labels must be distinct, got {list(spec.labels)}")
    if len(spec.text_fields) not in (1, 2):
        raise LorankError(f"{where}: needs one or two text fields, got {list(spec.text_fields)}")
    for key in ("label_words", "label_descriptions"):
        if len(getattr(spec, key)) != spec.K:
            raise LorankError(f"{where}: {key} must have one entry per label ({spec.K})")
    if spec.template.count(MASK) != 1 or "{text_a}" not in spec.template:
        raise LorankError(f"{where}: template must contain {{text_a}} and exactly one {MASK}")
    if ("{text_b}" in spec.template) != spec.is_pair:
        raise LorankError(f"{where}: template uses {{text_b}} iff the task has two text fields")
    bad = [m for m in spec.metrics if m not in METRICS]
    if bad or not spec.metrics:
        raise LorankError(f"{where}: metrics must be among {METRICS}, got {list(spec.metrics)}")
    if "f1" in spec.metrics and spec.K != 2:
        raise LorankError(f"{where}: f1 is defined here for binary tasks only")
    if spec.hub is not None and len(spec.hub.label_names) != spec.K:
        raise LorankError(f"{where}: hub label_names must have one entry per label")


def _key(name: str) -> str:
    """Normalised lookup key: lower case without ``-``, ``_``, spaces (``SST-2`` -> ``sst2``)."""
    return re.sub(r"[-_\s]", "", name).lower()


#: The built-in tasks. One declarative entry per task.
BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="SST-2",
        labels=("0", "1"),
        text_fields=("sentence",),
        template="{text_a} It was {mask} .",
        label_words=("terrible", "great"),
        label_descriptions=("It was terrible.", "It was great."),
        aliases=("sst", "sst2"),
        lmbff=LmbffFiles("SST-2", ("sentence",), "label", test_rows=872),
        hub=HubSource("glue", "sst2", ("sentence",), ("negative", "positive")),
        description="Stanford Sentiment Treebank, binary sentence sentiment (0 neg, 1 pos)",
    ),
    TaskSpec(
        name="QNLI",
        labels=("entailment", "not_entailment"),
        text_fields=("question", "sentence"),
        template="{text_a} ? {mask} , {text_b}",
        label_words=("Yes", "No"),
        label_descriptions=("The sentence answers the question.",
                            "The sentence does not answer the question."),
        lmbff=LmbffFiles("QNLI", ("question", "sentence"), "label", test_rows=5463),
        hub=HubSource("glue", "qnli", ("question", "sentence"),
                      ("entailment", "not_entailment")),
        description="Question-answering NLI: does the sentence answer the question?",
    ),
    TaskSpec(
        name="MRPC",
        labels=("0", "1"),
        text_fields=("sentence1", "sentence2"),
        template="{text_a} {mask} , {text_b}",
        label_words=("No", "Yes"),
        label_descriptions=("The two sentences mean different things.",
                            "The two sentences mean the same thing."),
        metrics=("accuracy", "f1"),
        lmbff=LmbffFiles("MRPC", ("#1 String", "#2 String"), "Quality", test_rows=408),
        hub=HubSource("glue", "mrpc", ("sentence1", "sentence2"),
                      ("not_equivalent", "equivalent")),
        description="Microsoft Research Paraphrase Corpus (1 = paraphrase)",
    ),
    TaskSpec(
        name="RTE",
        labels=("entailment", "not_entailment"),
        text_fields=("sentence1", "sentence2"),
        template="{text_a} ? {mask} , {text_b}",
        label_words=("Yes", "No"),
        label_descriptions=("The second sentence follows from the first.",
                            "The second sentence does not follow from the first."),
        lmbff=LmbffFiles("RTE", ("sentence1", "sentence2"), "label", test_rows=277),
        hub=HubSource("glue", "rte", ("sentence1", "sentence2"),
                      ("entailment", "not_entailment")),
        description="Recognising Textual Entailment",
    ),
    TaskSpec(
        name="MNLI",
        labels=("entailment", "neutral", "contradiction"),
        text_fields=("premise", "hypothesis"),
        template="{text_a} ? {mask} , {text_b}",
        label_words=("Yes", "Maybe", "No"),
        label_descriptions=("The hypothesis is true given the premise.",
                            "The hypothesis might be true given the premise.",
                            "The hypothesis is false given the premise."),
        aliases=("mnli-m", "mnli-matched"),
        lmbff=LmbffFiles("MNLI", ("sentence1", "sentence2"), "gold_label",
                         dev_file="dev_matched.tsv", test_file="test_matched.tsv",
                         test_rows=9815),
        hub=HubSource("glue", "mnli", ("premise", "hypothesis"),
                      ("entailment", "neutral", "contradiction"),
                      test_split="validation_matched"),
        description="Multi-Genre NLI, matched dev set as test (3 classes)",
    ),
)


class TaskRegistry:
    """Name -> TaskSpec with aliases; lookups ignore case, ``-``, ``_`` and spaces."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self._keys: dict[str, str] = {}

    def register(self, spec: TaskSpec) -> TaskSpec:
        """Add a task; LorankError if its name or an alias is already taken."""
        keys = {_key(spec.name), *(_key(a) for a in spec.aliases)}
        taken = sorted(k for k in keys if k in self._keys)
        if taken:
            raise LorankError(f"task name {spec.name!r} (or an alias) is already registered "
                              f"as {self._keys[taken[0]]!r}; pick another name")
        self._specs[spec.name] = spec
        for k in keys:
            self._keys[k] = spec.name
        return spec

    def get(self, name: str | TaskSpec) -> TaskSpec:
        """Look a task up by name or alias; LorankError listing the known tasks if unknown."""
        if isinstance(name, TaskSpec):
            return name
        canonical = self._keys.get(_key(str(name)))
        if canonical is None:
            raise LorankError(f"unknown task {name!r}; known tasks: {', '.join(self.names())} "
                              "(or give your own file with --data FILE)")
        return self._specs[canonical]

    def names(self) -> list[str]:
        """Canonical task names in registration order."""
        return list(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


#: The process-wide registry holding :data:`BUILTIN_TASKS`.
REGISTRY = TaskRegistry()
for _spec in BUILTIN_TASKS:
    REGISTRY.register(_spec)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Registered task by name or alias (``"sst2"``, ``"SST-2"``, ``"sst_2"`` …)."""
    return REGISTRY.get(name)


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a new task in the process-wide registry (duplicate names are an error)."""
    return REGISTRY.register(spec)


def task_names() -> list[str]:
    """Canonical names of all registered tasks."""
    return REGISTRY.names()


def custom_task(
    labels: Sequence[str],
    *,
    name: str = "custom",
    pair: bool = False,
    text_fields: Sequence[str] | None = None,
    label_words: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> TaskSpec:
    """A TaskSpec for a user's own label set, built at run time (not registered).

    The label words default to the labels themselves; the template is
    ``"{text_a} {mask} ."`` (single text) or ``"{text_a} ? {mask} , {text_b}"`` (pairs), the
    label descriptions are ``"It is <word>."`` for each label word (the verbaliser head embeds
    them), metrics accuracy only (``metrics=("accuracy", "f1")`` makes binary F1 of label index
    1 the primary metric).
    """
    labels = tuple(str(x).strip() for x in labels)
    if text_fields is None:
        text_fields = ("text_a", "text_b") if pair else ("text_a",)
    pair = len(tuple(text_fields)) == 2
    words = tuple(str(w).strip() for w in label_words) if label_words is not None else labels
    return TaskSpec(
        name=name,
        labels=labels,
        text_fields=tuple(text_fields),
        template="{text_a} ? {mask} , {text_b}" if pair else "{text_a} {mask} .",
        label_words=words,
        label_descriptions=tuple(f"It is {w}." for w in words),
        metrics=tuple(metrics) if metrics is not None else ("accuracy",),
    )


def label_order(values: Sequence[str]) -> tuple[str, ...]:
    """The label set found in a file, in a fixed order that does not depend on the row order:
    numeric order when every label is an integer (``"2" < "10"``), else string order.

    The order decides the label index y (position) and so the meaning of F1's positive class
    (index 1); declare it yourself with ``--labels`` to choose another.
    """
    distinct = set(values)

    def as_int(x: str) -> int | None:
        try:
            return int(x)
        except ValueError:
            return None

    ints = {x: as_int(x) for x in distinct}
    if all(v is not None for v in ints.values()):
        return tuple(sorted(distinct, key=lambda x: (ints[x], x)))
    return tuple(sorted(distinct))


def parse_label_words(text: str | Mapping[Any, Any] | Sequence[Any]
                      ) -> tuple[tuple[str, str], ...]:
    """``"0=terrible,1=great"`` (or a mapping, or (label, word) pairs) -> (("0", "terrible"),
    ("1", "great")). Labels and words are stripped; both must be non-empty and labels distinct.
    """
    example = "e.g. --label-words 0=terrible,1=great"
    if isinstance(text, str):
        pairs: list[tuple[Any, Any]] = []
        for item in (x for x in text.split(",") if x.strip()):
            if "=" not in item:
                raise LorankError(f"label words must be LABEL=WORD pairs ({example}), "
                                  f"got {item.strip()!r}")
            label, word = item.split("=", 1)
            pairs.append((label, word))
    elif isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = [tuple(p) for p in text]
        if any(len(p) != 2 for p in pairs):
            raise LorankError(f"label words must be (label, word) pairs ({example})")
    out = []
    for label, word in pairs:
        label_s = label_string(label)
        if not label_s or not isinstance(word, str | int | float) or not str(word).strip():
            raise LorankError(f"label words need a label and a word in every pair ({example}), "
                              f"got {label!r}={word!r}")
        out.append((label_s, str(word).strip()))
    if not out:
        raise LorankError(f"label words are empty ({example})")
    seen = [label for label, _ in out]
    if len(set(seen)) != len(seen):
        raise LorankError(f"label words name a label twice: {', '.join(seen)}")
    return tuple(out)


def label_string(value: Any) -> str | None:
    """A label value as a string: JSON 1 -> "1", 1.0 -> "1", True -> "true", text stripped;
    None if missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def label_words_for(labels: Sequence[str], label_words: Any, where: str) -> tuple[str, ...]:
    """The word of every label, in label order, from a :func:`parse_label_words` input;
    LorankError naming a label without a word, or a word for a label not in ``labels`` (which
    come from ``where``: ``"the data"``, ``"--labels"``)."""
    words = dict(parse_label_words(label_words))
    missing = [lab for lab in labels if lab not in words]
    extra = [lab for lab in words if lab not in labels]
    if missing or extra:
        what = (f"no word for label(s) {', '.join(missing)}" if missing
                else f"label(s) {', '.join(extra)} are not in {where}")
        raise LorankError(f"--label-words: {what}; the labels are {', '.join(labels)}")
    return tuple(words[lab] for lab in labels)


def parse_labels(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse a user's declared label set: ``"neg,pos"`` or a list; blanks dropped, order kept."""
    items = text.split(",") if isinstance(text, str) else [str(x) for x in text]
    labels = tuple(x.strip() for x in items if x.strip())
    if len(labels) < 2:
        raise LorankError(f"declare at least two labels (e.g. --labels neg,pos), got {text!r}")
    if len(set(labels)) != len(labels):
        raise LorankError(f"declared labels must be distinct, got {text!r}")
    return labels
