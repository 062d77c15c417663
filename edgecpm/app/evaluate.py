"""`edgecpm eval`: an artifact against a reference artifact on a text file (rich table or JSON).

The math (chunking, KL, perplexity) is edgecpm.runtime.evaluate; this module reads the text, loads
both artifacts and presents the figures.
"""

from __future__ import annotations

import json

from edgecpm.contract import UserError
from edgecpm.export.calibrate import read_text
from edgecpm.runtime import load
from edgecpm.runtime.evaluate import evaluate


def run_eval(artifact: str, reference: str, text: str, ctx: int = 512, path: str = "decode", threads: int | None = None,
             as_json: bool = False) -> dict:
    """Load both artifacts, score ARTIFACT against REFERENCE on the text file, print the figures."""
    from rich.progress import Progress

    body = read_text(text, "--text")
    engine, tok = load(artifact, context=ctx, threads=threads)
    ref, ref_tok = load(reference, context=ctx, threads=threads)
    tokens = tok.encode(body, add_bos=False)
    if ref_tok.encode(body, add_bos=False) != tokens:
        raise UserError(f"{artifact} and {reference} tokenize the text differently; compare exports of the same model")
    bos = tok.bos_token_id if tok.add_bos else None
    with Progress(disable=as_json, transient=True) as bar:
        task = bar.add_task("scoring chunks", total=None)
        res = evaluate(engine, ref, tokens, ctx, path, bos, lambda done, total: bar.update(task, completed=done,
                                                                                           total=total))
    res = {"artifact": str(artifact), "reference": str(reference), "text": str(text), **res}
    if as_json:
        print(json.dumps(res, indent=2))
    else:
        _table(res)
    return res


def _table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{res['artifact']} vs {res['reference']}", show_header=True)
    for col in ("positions", "PPL", "ref PPL", "mean KL", "max KL", "top-1"):
        t.add_column(col, justify="right")
    t.add_row(str(res["positions"]), f"{res['ppl']:.3f}", f"{res['ref_ppl']:.3f}", f"{res['kl_mean']:.5f}",
              f"{res['kl_max']:.3f}", f"{100 * res['top1']:.1f} %")
    Console().print(t)
    print(f"{res['chunks']} chunks of {res['ctx']} tokens, second half of each scored ({res['path']} path)")
