"""The view list of main_mlp.py --view-latents: its text, parsed and spelled one way.

    parse_spec   '0-2;1,2' -> ((0, 1, 2), (1, 2)): the latents of each view, in the order given
    canonical    the one spelling of a view list ('0 - 2 ; 1 , 2' -> '0-2;1,2'), the --view-latents
                 flag's argparse type, so that args.json, the saved model and the runner compare
                 view lists by what they mean and never by how they were typed

No torch: the runner and the report compare view lists too (partial.py builds the model).
"""
import re

from cli import UserError

FLAG = "--view-latents"
MAX_LATENTS = 64   # the networks grow with the view sizes (hidden widths 50 |S_k|)
MAX_LISTED_VIEWS = 8      # the loss has a term per set of views: up to 2^K - K - 1 of them


def parse_spec(text):
    """'0-2;1,2' -> ((0, 1, 2), (1, 2)): the latents of each view, in the order given."""
    if not text.strip():
        raise UserError(f"{FLAG} is empty; give the latents of each view, e.g. '0-2;1,2,3'")
    views = tuple(parse_view(part, k) for k, part in enumerate(text.split(";"), 1))
    if len(views) < 2:
        raise UserError(f"{FLAG} names {len(views)} view; give at least 2, separated by ';'")
    if len(views) > MAX_LISTED_VIEWS:
        raise UserError(f"{FLAG} names {len(views)} views; at most {MAX_LISTED_VIEWS} (the loss has a term "
                        "for every set of views that shares a latent)")
    n = 1 + max(max(v) for v in views)
    unseen = sorted(set(range(n)) - set().union(*map(set, views)))
    if unseen:
        raise UserError(f"{FLAG}: latent {unseen[0]} is seen by no view; number the latents "
                        f"0..{n - 1} without gaps")
    return views


def parse_view(part, k):
    if not part.strip():
        raise UserError(f"{FLAG}: view {k} sees no latents (nothing between two ';')")
    latents = [i for item in part.split(",") for i in parse_item(item.strip(), k)]
    repeated = [i for i in latents if latents.count(i) > 1]
    if repeated:
        raise UserError(f"{FLAG}: view {k} lists latent {repeated[0]} twice")
    return tuple(latents)


def parse_item(item, k):
    # [0-9], not \d: int() would read other scripts' digits ('٣' is 3) as latents
    match = re.fullmatch(r"([0-9]+)(?:\s*-\s*([0-9]+))?", item)
    if not match:
        raise UserError(f"{FLAG}: view {k}: {item!r} is not a latent index or a range A-B "
                        "(indices are integers 0, 1, ... in ASCII digits)")
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    if last >= MAX_LATENTS or first >= MAX_LATENTS:
        raise UserError(f"{FLAG}: view {k}: latent {max(first, last)} is out of range "
                        f"(indices 0..{MAX_LATENTS - 1})")
    if last < first:
        raise UserError(f"{FLAG}: view {k}: the range {item!r} runs backwards")
    return range(first, last + 1)


def spell(views):
    """((0, 1, 2), (1, 2)) -> '0-2;1,2': three or more consecutive ascending latents as a range."""
    def view_text(latents):
        runs = []
        for i in latents:
            if runs and i == runs[-1][-1] + 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)
    return ";".join(view_text(v) for v in views)


def canonical(text):
    """The one spelling of a view list (checked: a bad list is a one-line UserError)."""
    return spell(parse_spec(text))


def same(a, b):
    """Whether two view lists (texts, or None for none) name the same views, in the same order."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return parse_spec(a) == parse_spec(b)
    except UserError:
        return a == b
