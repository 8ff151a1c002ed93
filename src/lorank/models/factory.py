"""``build_classifier``: an encoder + a task + a head name -> a :class:`Classifier`.

Heads (see :mod:`lorank.models.heads` and :mod:`lorank.models.prompt`):

=============  ===========================================  ==========================
head           logits                                       fitted on train / dev
=============  ===========================================  ==========================
verbalizer     ⟨e(x), e(v_k)⟩ / τ, label embeddings frozen  nothing (zero-shot)
prompt         MLM logits of the label words at the mask    nothing (zero-shot)
probe          logistic regression on e(x) / (u,v,|u−v|,u⊙v)  W, b; C chosen on dev
pair           logistic regression on cos(u,v) + alignment   K × F + K scalars; C on dev
=============  ===========================================  ==========================

Every head's weights are frozen (``requires_grad=False``); the classifier is in eval mode.
"""

from __future__ import annotations

import inspect
from typing import Any

from lorank.errors import LorankError
from lorank.models.classifier import Classifier
from lorank.models.encoder import Encoder

HEADS = ("verbalizer", "prompt", "probe", "pair")
FITTED_HEADS = ("probe", "pair")


def build_classifier(enc: Encoder, task: Any, head: str = "verbalizer", train: Any = None,
                     dev: Any = None, **head_kw: Any) -> Classifier:
    """Build a classifier with K = task.K logits.

    Args:
        enc: from :func:`lorank.models.load_encoder`.
        task: a ``lorank.data`` TaskSpec or task name.
        head: one of :data:`HEADS`.
        train: k-shot train Split (required by ``probe`` and ``pair``).
        dev: k-shot dev Split, used by ``probe``/``pair`` to choose the regularisation C.
        head_kw: head options: ``tau``/``descriptions`` (verbalizer), ``label_words``
            (prompt), ``features`` (pair), ``C_grid`` (probe, pair).
    """
    from lorank.models.heads import PairClassifier, ProbeClassifier, VerbalizerClassifier
    from lorank.models.prompt import PromptClassifier

    if isinstance(task, str):
        from lorank.data.tasks import get_task

        task = get_task(task)
    if head not in HEADS:
        raise LorankError(f"unknown head {head!r}; choose from: {', '.join(HEADS)}")
    fit_kw = {k: head_kw.pop(k) for k in ("C_grid",) if k in head_kw}
    cls = {"verbalizer": VerbalizerClassifier, "prompt": PromptClassifier,
           "probe": ProbeClassifier, "pair": PairClassifier}[head]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in
               ("self", "enc", "task")]
    unknown = sorted(set(head_kw) - set(allowed))
    if unknown:
        raise LorankError(f"unknown option(s) {unknown} for the {head} head; options: "
                          f"{', '.join(allowed) or 'none'}")
    clf = cls(enc, task, **head_kw)
    if head in FITTED_HEADS:
        clf.fit(train, dev, **fit_kw)
    clf.freeze_head()
    return clf.eval()
