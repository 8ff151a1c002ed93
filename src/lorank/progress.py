"""Progress bars: one library, tqdm, for lorank's own bars and for the libraries it drives.

lorank draws its bars with :func:`bar` (``tqdm.auto``: a terminal bar on stderr, a widget under
Jupyter); transformers ("Loading weights" per model) and huggingface_hub (downloads) draw theirs
with tqdm as well, so one ``--no-progress`` can silence all of them: :func:`library_progress`
switches the libraries' bars off in this process (``transformers.utils.logging
.disable_progress_bar``, which also covers huggingface_hub) and, through
``HF_HUB_DISABLE_PROGRESS_BARS=1``, in the worker processes it spawns; both are restored on exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def bar(total: int | None, desc: str, enabled: bool = True, unit: str = "it",
        leave: bool = False) -> Any:
    """A tqdm progress bar on stderr (disabled, drawing nothing, when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


@contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """Within the block, transformers' and huggingface_hub's progress bars are on (unchanged)
    or, with ``enabled`` False, off — here and in processes spawned inside the block.

    Switching them off does not import transformers (seconds): huggingface_hub's switch is the
    one transformers reads when it is imported later, and transformers' own switch is flipped
    too when it is already loaded. Both are restored on exit.
    """
    if enabled:
        yield
        return
    from huggingface_hub import utils as hub

    hub_was_on = not hub.are_progress_bars_disabled()
    tf = sys.modules.get("transformers.utils.logging")
    tf_was_on = tf.is_progress_bar_enabled() if tf is not None else hub_was_on
    saved = os.environ.get(ENV)
    hub.disable_progress_bars()
    if tf is not None:
        tf.disable_progress_bar()
    os.environ[ENV] = "1"  # read at import by spawned workers
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved
        tf = sys.modules.get("transformers.utils.logging")
        if tf is not None and tf_was_on:
            tf.enable_progress_bar()  # transformers' switch and huggingface_hub's
        elif hub_was_on:
            hub.enable_progress_bars()
