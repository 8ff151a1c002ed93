"""``lorank prescribe``: every rank prescription of the theory for one fine-tuning setup.

The setup's K and N come from ``--K/--N``, a registered task (``--task sst2 --shots 16``) or a
user's own data file (``--data my.csv``: its label set and its rows as they are, or an LM-BFF
sample with ``--shots``); the adapted shapes from ``--shape MxN`` (repeatable)
or a model config (``--model ID --targets query,value --layers last``).
"""

from __future__ import annotations

import json
import re
import shlex

import click

from lorank.cli.checks import INT_LIKE
from lorank.cli.options_data import own_data_options, source_from_options
from lorank.data.source import DataSource
from lorank.data.tasks import get_task
from lorank.errors import LorankError, check_positive_int
from lorank.models.lora_shape import parse_layers
from lorank.theory import C_STAR_PAPER, prescribe
from lorank.theory.prescription import Prescription

_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_shape(text: str) -> tuple[int, int]:
    """Parse ``"768x768"`` into (768, 768); LorankError if malformed or not positive."""
    match = _SHAPE.match(text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise LorankError(f"malformed shape {text!r}: expected MxN with positive integers, "
                          "e.g. 768x768")
    return int(match.group(1)), int(match.group(2))


def shapes_from_model(model: str, targets: list[str] | None, layers: str
                      ) -> tuple[list, list[str]]:
    """Adapted (m, n) shapes and their module paths for a model config (no weights loaded)."""
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config

    mats = adapted_matrices(load_config(model), targets, layers)
    return [m.shape for m in mats], [m.path for m in mats]


def kn_from_data(task: str | None, source: DataSource | None, shots: int | None,
                 data_dir: str | None) -> tuple[int, int, str]:
    """K, N and a description of the setup from a registered task (``--task``, N = K·shots) or
    a user's own files: the training file as it is (its K labels and N rows), or, with
    ``--shots``, an LM-BFF sample of ``shots`` examples per class (N = K·shots)."""
    from lorank.cli.options_data import DEFAULT_SHOTS, echo_lines, load_datasets
    from lorank.data.source import describe, training_file

    if source is not None and shots is None:
        spec, train, dropped = training_file(source)
        echo_lines(describe(source, spec, dropped, heads=False))
        return spec.K, len(train), f"{spec.name}: all {len(train)} rows of {source.train}"
    seed = 42
    data = load_datasets(task, source, seeds=[seed], shots=shots or DEFAULT_SHOTS,
                         data_dir=data_dir)[seed]
    if source is not None:
        echo_lines(describe(source, data.task, dict(data.meta["empty_text_dropped"]),
                            heads=False))
    what = "sampled from " + source.train if source is not None else f"seed {data.seed}"
    return data.K, data.N, f"{data.task.name}, {data.k}-shot, {what}"


def render_table(p: Prescription, setup: str, measure: str = "") -> None:
    """Print the prescription as a rich table, then what it claims: the recommended rank with
    the CE rule's condition (K ≤ 2) or the rules' range and why (K > 2), and the command that
    measures the rank on the user's data."""
    from rich.table import Table

    from lorank.cli.options_run import wide_console

    table = Table(title=f"LoRA rank prescriptions — {setup}", title_justify="left")
    for col in ("rule", "smallest r", "condition", "LoRA params at r", "source"):
        table.add_column(col, justify="right" if col in ("smallest r", "LoRA params at r")
                         else "left")
    for row in p.rows():
        r = "none <= min(m,n)" if row.r is None else str(row.r)
        params = "-" if row.lora_params is None else f"{row.lora_params:,}"
        if row.r is not None and row.r > p.r_max:  # a rank no adapted matrix can hold
            r, params = f"{row.r} (unreachable: > {p.r_max})", "-"
        table.add_row(row.rule, r, row.condition, params, row.source)
    console = wide_console(120)
    console.print(table)
    if not p.sard_reachable:
        console.print(f"note: the Sard rank {p.sard_exact} exceeds min(m, n) = {p.r_max} of the "
                      "adapted matrices: unreachable, no LoRA of them meets r(r+1)/2 > KN")
    for line in claim_lines(p, measure):  # the command stays on one line (copyable)
        console.print(line, highlight=False, soft_wrap="lorank train" in line)


def claim_lines(p: Prescription, measure: str = "") -> list[str]:
    """What the prescription claims, in the words the evidence supports (see module
    :mod:`lorank.theory.prescription`)."""
    from lorank.theory.prescription import (
        CE_CAPACITY_GAUSSIAN,
        CE_CONDITION,
        CE_MEASURED,
        MULTICLASS_NOTE,
    )

    lines = []
    if p.settled:
        rec = p.recommended
        why = (f"cross-entropy: {CE_CONDITION}" if p.loss == "ce"
               else "squared loss: total manifold count")
        lines.append(f"recommended rank ({why}): {'none' if rec is None else rec}")
    else:
        lo, hi = p.rank_range
        lines.append(f"no single recommended rank: K = {p.K} > 2, the rules span r = {lo} to "
                     f"{hi}")
        lines.append(f"  why: {MULTICLASS_NOTE}")
    if p.loss == "ce":
        ratio = p.capacity_ratio
        lines.append(f"  {CE_MEASURED}")
        lines.append(f"  here K·N/d(r = 1) = {ratio:.3g} ("
                     + ("below" if ratio < CE_CAPACITY_GAUSSIAN else "ABOVE")
                     + f" the Gaussian capacity ≈ {CE_CAPACITY_GAUSSIAN:g}); --check-separable "
                     "tests your data's features")
    if measure:
        lines.append(("  measure it on your data: " if not p.settled else
                      "  check it on your data: ") + measure)
    return lines


def _measure(model: str | None, targets: list[str] | None, layers: str, head: str | None,
             top: int) -> str:
    """The `lorank train` command that measures the rank on the data given to this command
    (the data options as the user gave them, read from the click context)."""
    from lorank.recommend import measure_command

    ctx = click.get_current_context()
    skip = {"K", "N", "shapes", "model", "targets", "layers", "data_dir", "c_star", "loss",
            "as_json", "check_separable", "head"}
    args = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in skip or value in (None, False, ()) or not isinstance(
                param, click.Option) or ctx.get_parameter_source(param.name).name == "DEFAULT":
            continue
        args.append(f"{param.opts[0]} {shlex.quote(str(value))}")
    if not args:
        args = ["--task <your task>"]
    return measure_command(model or "<your model>", " ".join(args), top, targets, layers, head)


@click.command("prescribe")
@click.option("--K", "K", type=INT_LIKE, help="Number of output logits trained.")
@click.option("--N", "N", type=INT_LIKE, help="Number of training examples (1e5 allowed).")
@click.option("--shape", "shapes", multiple=True, metavar="MxN",
              help="An adapted matrix shape (repeatable), e.g. --shape 768x768.")
@click.option("--model", help="Hub id, local folder or bundled name (minilm, mpnet).")
@click.option("--targets", help="Comma-separated LoRA target modules (default: query,value).")
@click.option("--layers", default="all", show_default=True,
              help="'all', 'last' or comma-separated layer indices.")
@click.option("--task", help="Registered task (sst2, qnli, mrpc, rte, mnli): K and N from it.")
@click.option("--shots", type=int, default=None,
              help="k examples per class: N = K·k for --task (default 16), or an LM-BFF "
                   "sample of --data (default: the file as it is, its own N).")
@click.option("--data-dir", envvar="LORANK_DATA_DIR",
              help="Data directory (LM-BFF layout); env LORANK_DATA_DIR.")
@own_data_options
@click.option("--c-star", "c_star", type=float, default=C_STAR_PAPER, show_default=True,
              help="Manifold-count constant C*.")
@click.option("--loss", type=click.Choice(["ce", "mse"]), default="ce", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--check-separable", is_flag=True,
              help="Check the CE rule's condition on your data: are the linearized training "
                   "data separable? (needs --model and --task/--data; computes the train NTK "
                   "features of the seed-42 split, cached).")
@click.option("--head", default=None,
              help="Head for --check-separable (default: pair for sentence pairs, else "
                   "verbalizer).")
def command(K, N, shapes, model, targets, layers, task, shots, data_dir, c_star, loss, as_json,
            check_separable, head, **own) -> None:
    """Smallest LoRA ranks by the Sard, manifold and cross-entropy (PL) rules.

    K and N: --K/--N, a registered task (--task), or your own file (--data: its labels and
    rows; --shots to count an LM-BFF sample instead).
    """
    source = source_from_options(task=task if own["data"] else None, **own)
    if shapes and model:
        raise LorankError("give either --shape or --model, not both")
    if not shapes and not model:
        raise LorankError("give the adapted shapes: --shape MxN (repeatable) or --model ID")
    if shots is not None:
        check_positive_int("--shots", shots)
    parsed = [parse_shape(s) for s in shapes]
    paths: list[str] = []
    target_list = [t for t in targets.split(",") if t.strip()] if targets else None
    if model:
        parsed, paths = shapes_from_model(model, target_list, layers)
    elif targets or layers != "all":
        raise LorankError("--targets and --layers need --model")
    if check_separable and not (model and (task or source)):
        raise LorankError("--check-separable needs the model's features: give --model and "
                          "--task or --data")
    if head and not check_separable:
        raise LorankError("--head applies to --check-separable")
    setup = ""
    if task or source:
        if K is not None or N is not None:
            raise LorankError("give either --K/--N or --task/--data, not both")
        K, N, setup = kn_from_data(task, source, shots, data_dir)
    elif K is None or N is None:
        raise LorankError("give --K and --N, or --task/--data to derive them")
    elif shots is not None:
        raise LorankError("--shots applies to --task or --data")
    p = prescribe(K, N, parsed, c_star=c_star, loss=loss)
    setup = f"K={p.K}, N={p.N}, {len(p.shapes)} adapted matrices" + (f" ({setup})" if setup
                                                                       else "")
    pair = bool(own.get("text_b")) or (source is None and task is not None
                                        and get_task(task).is_pair)
    measure = _measure(model, target_list, layers, "pair" if pair else None, p.rank_range[1])
    separability = None
    if check_separable:
        from lorank.cli.options_data import load_datasets
        from lorank.linearized.separable import check_separable as check

        data = load_datasets(task, source, seeds=[42], shots=shots, data_dir=data_dir)[42]
        # the head the sweeps use: the pair head on sentence-pair tasks, else the verbaliser
        head = head or ("pair" if data.task.is_pair else "verbalizer")
        separability = check(data, model, head, targets=target_list,
                             layers=parse_layers(layers), data_dir=data_dir)
    if as_json:
        out = p.to_dict()
        out["setup"] = setup
        if paths:
            out["modules"] = paths
        if measure:
            out["measure"] = measure
        if separability is not None:
            from dataclasses import asdict

            out["separability"] = asdict(separability)
        click.echo(json.dumps(out, indent=2))
    else:
        render_table(p, setup, measure)
        if separability is not None:
            click.echo(f"check-separable ({head} head, "
                       f"{separability.source}): {separability.line()}")

