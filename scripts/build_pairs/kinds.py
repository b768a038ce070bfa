"""Pair generators, one per kind. Each yields candidate pairs; `select` picks a fixed number.

Every generator is deterministic given its `random.Random` and the (ordered) call pool.
"""

import copy
import difflib
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass

import equiv
import text
from calls import canon

DUPLICATE_KINDS = [
    "key_order", "whitespace", "case_insensitive", "number_form", "schema_default", "metadata",
    "paraphrase", "value_alias", "prose_edit_derived",
]
DISTINCT_KINDS = [
    "identity_changed", "swapped", "different_tool", "prose_different", "prose_value_changed_derived",
    "prose_swap_derived", "prose_unrelated",
]


@dataclass(eq=False)
class Pair:
    kind: str
    duplicate: bool
    a: dict
    b: dict
    source: str
    tool: str       # the tool the pair is "about" (for per-tool caps)
    side: bool      # that tool reads like it has side effects

    def record(self):
        return {"a": self.a, "b": self.b, "duplicate": self.duplicate, "kind": self.kind,
                "source": self.source}

    def key(self):
        return canon([self.a, self.b]) + json.dumps([self.a, self.b], ensure_ascii=False)


def call(tool, args):
    return {"tool": tool, "args": args}


def bfcl(src):
    return f"bfcl:{src}"


def mk(kind, dup, a_tool, a_args, b_tool, b_args, source):
    return Pair(kind, dup, call(a_tool, a_args), call(b_tool, b_args), source, a_tool,
                text.side_effect_tool(a_tool))


# --------------------------------------------------------------------------------- helpers

def leaves(v, path=()):
    """(path, value) of every scalar leaf, through dicts and lists."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield from leaves(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from leaves(x, path + (i,))
    else:
        yield path, v


def set_path(v, path, new):
    out = copy.deepcopy(v)
    cur = out
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = new
    return out


def path_str(path):
    return ".".join(str(p) for p in path)


def schema_at(schema, path):
    """The BFCL schema node of a leaf path (or {})."""
    node = schema
    for p in path:
        if not isinstance(node, dict):
            return {}
        if isinstance(p, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(p, {})
    return node if isinstance(node, dict) else {}


NUMERIC_TYPES = {"integer", "float", "number"}


def jtype(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return "null"


CREDENTIAL = re.compile(r"(token|password|passwd|secret|api_?key|credential|auth|session)", re.I)


def is_identity_param(name, value):
    if CREDENTIAL.search(name):
        return False   # a refreshed credential is the same action, not another one
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        return bool(value.strip()) and not text.is_prose_field(name, value)
    return False


def reorder(v, rng):
    """Same object, keys in another order (recursively)."""
    if isinstance(v, dict):
        keys = list(v)
        if len(keys) > 1:
            mode = rng.choice(["reverse", "rotate"])
            keys = keys[::-1] if mode == "reverse" else keys[1:] + keys[:1]
        return {k: reorder(v[k], rng) for k in keys}
    if isinstance(v, list):
        return [reorder(x, rng) for x in v]
    return v


# ------------------------------------------------------------------------- duplicate kinds

def gen_key_order(calls, ctx, rng):
    for c in calls:
        if len(c.args) < 2:
            continue
        b = reorder(c.args, rng)
        if list(b) == list(c.args):
            continue
        yield mk("key_order", True, c.tool, c.args, c.tool, b, bfcl(c.src))


def _ws_variants(s):
    out = [s + " ", "  " + s, " " + s + "  ", s + "\n", "\t" + s]
    if " " in s:
        i = s.index(" ")
        out.append(s[:i] + "  " + s[i:])
    return out


def gen_whitespace(calls, ctx, rng):
    for c in calls:
        spots = []
        for path, v in leaves(c.args):
            top = str(path[0])
            if (isinstance(v, str) and v and v == v.strip() and "  " not in v
                    and not text.LITERAL_NAME.search(top) and not text.looks_structured(v)):
                spots.append((path, v))
        if not spots:
            continue
        path, v = rng.choice(spots)
        new = rng.choice(_ws_variants(v))
        # mostly b alone is padded; sometimes a is padded and b is the clean value
        if rng.random() < 0.2:
            yield mk("whitespace", True, c.tool, set_path(c.args, path, new), c.tool, c.args,
                     f"{bfcl(c.src)} ({path_str(path)})")
        else:
            yield mk("whitespace", True, c.tool, c.args, c.tool, set_path(c.args, path, new),
                     f"{bfcl(c.src)} ({path_str(path)})")


EMAIL = re.compile(r"([^@\s]+)@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _flip_case(s, rng):
    choices = [x for x in (s.lower(), s.upper(), s.title(), s.capitalize()) if x != s]
    return rng.choice(choices) if choices else None


def gen_case_insensitive(calls, ctx, rng):
    """Only where case is known not to matter: email domains, URL scheme and host, UUID hex,
    and parameters for which the BFCL annotators accept values differing only in case."""
    evidence = ctx["case_evidence"]
    for c in calls:
        for path, v in leaves(c.args):
            if not isinstance(v, str):
                continue
            m = EMAIL.fullmatch(v)
            if m:
                dom = m[2].upper() if rng.random() < 0.5 else m[2].title()
                if dom != m[2]:
                    yield mk("case_insensitive", True, c.tool, c.args, c.tool,
                             set_path(c.args, path, f"{m[1]}@{dom}"),
                             f"{bfcl(c.src)} ({path_str(path)}: email domain)")
                continue
            if re.match(r"(?i)https?://", v):
                u = urllib.parse.urlsplit(v)
                if u.hostname and "@" not in u.netloc:
                    new = urllib.parse.urlunsplit((u.scheme.upper(), u.netloc.upper(), u.path, u.query, u.fragment))
                    if new != v:
                        yield mk("case_insensitive", True, c.tool, c.args, c.tool, set_path(c.args, path, new),
                                 f"{bfcl(c.src)} ({path_str(path)}: URL scheme and host)")
                continue
            if UUID_RE.fullmatch(v):
                yield mk("case_insensitive", True, c.tool, c.args, c.tool, set_path(c.args, path, v.upper()),
                         f"{bfcl(c.src)} ({path_str(path)}: UUID hex)")
                continue
            if len(path) == 1 and (c.tool, path[0]) in evidence:
                alt = next((o for o in c.alts.get(path[0], [])
                            if isinstance(o, str) and o != v and o.casefold() == v.casefold()), None)
                if alt is not None:
                    yield mk("case_insensitive", True, c.tool, c.args, c.tool, set_path(c.args, path, alt),
                             f"{bfcl(c.src)} ({path[0]}: BFCL-accepted case variant)")
                else:
                    new = _flip_case(v, rng)
                    if new:
                        yield mk("case_insensitive", True, c.tool, c.args, c.tool, set_path(c.args, path, new),
                                 f"{bfcl(c.src)} ({path[0]}: case-insensitive per BFCL alternatives "
                                 f"of {evidence[(c.tool, path[0])]})")


def _fmt_float(x):
    return float(x)


def gen_number_form(calls, ctx, rng):
    for c in calls:
        spots = []
        for path, v in leaves(c.args):
            node = schema_at(c.schema, path)
            # a number written as a string only where the schema says number, and not as an
            # array element (a string among numbers would sort and compare differently)
            numeric_schema = node.get("type") in NUMERIC_TYPES and not any(isinstance(x, int) for x in path)
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                spots.append((path, float(v), "int->float"))
                if numeric_schema:
                    spots.append((path, str(v), "number->string"))
            elif isinstance(v, float):
                if v.is_integer() and abs(v) < 2**53:
                    spots.append((path, int(v), "float->int"))
                if numeric_schema:
                    spots.append((path, repr(v), "number->string"))
            elif isinstance(v, str) and numeric_schema and re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", v):
                spots.append((path, float(v) if "." in v else int(v), "string->number"))
        if not spots:
            continue
        path, new, how = rng.choice(spots)
        yield mk("number_form", True, c.tool, c.args, c.tool, set_path(c.args, path, new),
                 f"{bfcl(c.src)} ({path_str(path)}: {how})")


def gen_schema_default(calls, ctx, rng):
    defaults = ctx["defaults"]
    for c in calls:
        d = defaults.get(c.tool, {})
        present = [p for p in d if p in c.args and text.same(c.args[p], d[p])]
        absent = [p for p in d if p not in c.args]
        opts = [("drop", p) for p in present] + [("add", p) for p in absent]
        if not opts:
            continue
        how, p = rng.choice(opts)
        if how == "drop":
            b = {k: v for k, v in c.args.items() if k != p}
            yield mk("schema_default", True, c.tool, c.args, c.tool, b,
                     f"{bfcl(c.src)} (b omits {p}, equal to its schema default)")
        else:
            b = dict(c.args)
            b[p] = copy.deepcopy(d[p])
            yield mk("schema_default", True, c.tool, c.args, c.tool, b,
                     f"{bfcl(c.src)} (b adds {p} at its schema default)")


def _meta_value(name, rng):
    if name in ("request_id", "correlation_id"):
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if name == "trace_id":
        return "%032x" % rng.getrandbits(128)
    if name == "span_id":
        return "%016x" % rng.getrandbits(64)
    if name == "timestamp":
        t = 1_700_000_000 + rng.randrange(0, 60_000_000)
        if rng.random() < 0.5:
            return t * 1000
        import datetime as dt
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % rng.randrange(1000)
    if name == "_meta":
        return {"progressToken": rng.randrange(1, 10_000)}
    if name == "attempt":
        return rng.randrange(2, 5)
    if name == "retry_count":
        return rng.randrange(1, 4)
    raise ValueError(name)


META_FIELDS = ["request_id", "trace_id", "timestamp", "correlation_id", "span_id", "_meta", "attempt", "retry_count"]


def gen_metadata(calls, ctx, rng):
    for c in calls:
        props = {k.lower() for k in c.schema.get("properties", {})}
        names = [m for m in META_FIELDS if m.lower() not in props and m not in c.args]
        if not names:
            continue
        mode = rng.random()
        if mode < 0.45:      # a retry stamped with a fresh id: both carry one, values differ
            m = rng.choice([n for n in names if n not in ("attempt", "retry_count")])
            a = dict(c.args); a[m] = _meta_value(m, rng)
            b = dict(c.args); b[m] = _meta_value(m, rng)
            if text.same(a[m], b[m]):
                continue
            how = f"a and b carry different {m}"
        elif mode < 0.8:     # only the retry is stamped
            m = rng.choice(names)
            a = c.args
            b = dict(c.args); b[m] = _meta_value(m, rng)
            how = f"b adds {m}"
        else:                # the retry carries two stamps
            m1, m2 = rng.sample(names, 2)
            a = c.args
            b = dict(c.args); b[m1] = _meta_value(m1, rng); b[m2] = _meta_value(m2, rng)
            how = f"b adds {m1} and {m2}"
        yield mk("metadata", True, c.tool, a, c.tool, b, f"{bfcl(c.src)} ({how})")


def gen_alternatives(calls, ctx, rng):
    """BFCL-accepted alternative values that also pass a conservative equivalence check:
    free-text parameters give `paraphrase`, the others `value_alias`."""
    for c in calls:
        for p, others in c.alts.items():
            v = c.args[p]
            if not isinstance(v, str):
                continue
            for o in others:
                if not isinstance(o, str) or text.same_folded(v, o):
                    continue   # same up to case/space: covered by other kinds
                why = equiv.equivalent_reason(v, o)
                if not why:
                    continue
                prose = text.PROSE_NAME.search(p) and (text.is_prose_value(v) or text.is_prose_value(o))
                kind = "paraphrase" if prose else "value_alias"
                yield mk(kind, True, c.tool, c.args, c.tool, set_path(c.args, (p,), o),
                         f"{bfcl(c.src)} ({p}: BFCL-accepted alternative, {why})")


# --------------------------------------------------------------------- prose (hosts, texts)

BAD_QUESTION = re.compile(r"(QUERY:|Functions to use|\bfunction\b.*\bcall\b|Do not add parameters|API call|"
                          r"```|\{|\})", re.I)


def clean_question(q):
    q = text.norm_str(q)
    if BAD_QUESTION.search(q):
        return None
    ws = text.words(q)
    if not 4 <= len(ws) <= 45:
        return None
    if sum(ch.isascii() for ch in q) < 0.97 * len(q):
        return None
    if not text.is_prose_value(q):
        return None
    return q


def host_calls(calls, ctx):
    """Real calls of tools that take a user's request as free text, with that parameter."""
    out = []
    for c in calls:
        p = HOSTS.get(c.tool)
        if p and p in c.args and all(k in c.schema.get("properties", {}) for k in c.args):
            out.append((c, p))
    return out


HOSTS = {
    "contact_customer_support": "message",
    "send_message": "message",
    "create_ticket": "description",
    "handover_to_agent": "statement",
    "answer_question": "statement",
    "send_email": "body",
}


def embed(host, param, textv):
    c = host
    return set_path(c.args, (param,), textv)


def standalone(src):
    """Single-turn requests only: a multi-turn turn ("cancel that order") leans on its context."""
    return not src.startswith("multi_turn")


def questions(calls):
    """(call, entry src, clean question) for every single-turn BFCL request of one call."""
    out = []
    for c in calls:
        for src, q in c.questions:
            if not standalone(src):
                continue
            cq = clean_question(q)
            if cq:
                out.append((c, src, cq))
    return out


def same_call(c1, c2, defaults):
    """Two ground-truth calls that are one action: same tool and, parameter by parameter, equal
    values up to case/spacing/number form or a conservative equivalence (equiv.py); a parameter
    only one of them sets must be at its schema default."""
    if c1.tool != c2.tool:
        return False
    d = defaults.get(c1.tool, {})
    for k in set(c1.args) | set(c2.args):
        if k not in c1.args or k not in c2.args:
            v = c1.args.get(k, c2.args.get(k))
            if not (k in d and text.same(v, d[k])):
                return False
            continue
        v1, v2 = c1.args[k], c2.args[k]
        if text.same_folded(v1, v2) or equiv.equivalent_reason(v1, v2):
            continue
        return False
    return True


def gen_paraphrase_questions(calls, ctx, rng):
    """Two different single-turn BFCL requests whose ground truth is the same call: the same
    intent in two human phrasings. Embedded as the free text of one real host call."""
    hosts, defaults = ctx["hosts"], ctx["defaults"]
    by_tool = {}
    for c, src, q in questions(calls):
        by_tool.setdefault(c.tool, []).append((c, src, q))
    for tool in sorted(by_tool):
        items = by_tool[tool]
        pairs = []
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (c1, s1, q1), (c2, s2, q2) = items[i], items[j]
                if q1.casefold() == q2.casefold():
                    continue
                if c1 is c2 or same_call(c1, c2, defaults):
                    pairs.append((s1, s2, q1, q2, c1 is c2))
        rng.shuffle(pairs)
        for s1, s2, q1, q2, identical in pairs[:8]:
            h, p = rng.choice(hosts)
            how = "same ground-truth call" if identical else "equivalent ground-truth calls"
            yield mk("paraphrase", True, h.tool, embed(h, p, q1), h.tool, embed(h, p, q2),
                     f"{bfcl(s1)} ~ {bfcl(s2)} ({how} of {tool}) as {p} of {bfcl(h.src)}")


def differs_surely(c1, c2, rel):
    """Two calls of one tool whose arguments differ in a way nothing relates (a different action)."""
    if c1.tool != c2.tool:
        return False
    keys = set(c1.args) | set(c2.args)
    diff = False
    for k in keys:
        if k not in c1.args or k not in c2.args:
            continue
        v1, v2 = c1.args[k], c2.args[k]
        if text.same_folded(v1, v2):
            continue
        if isinstance(v1, (dict, list)) or isinstance(v2, (dict, list)):
            continue
        alts1 = [v1] + c1.alts.get(k, [])
        alts2 = [v2] + c2.alts.get(k, [])
        if any(rel.related(x, y) for x in alts1 for y in alts2):
            continue
        diff = True
    return diff


def gen_prose_different(calls, ctx, rng):
    """Two BFCL requests to the same tool whose ground-truth calls differ in an identity value:
    different actions, often in nearly the same words. Embedded in one host call."""
    hosts, rel = ctx["hosts"], ctx["rel"]
    by_tool = {}
    for c, src, q in questions(calls):
        by_tool.setdefault(c.tool, []).append((c, src, q))
    cands = []
    for tool in sorted(by_tool):
        items = by_tool[tool]
        scored = []
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (c1, s1, q1), (c2, s2, q2) = items[i], items[j]
                if c1 is c2 or q1.casefold() == q2.casefold():
                    continue
                jac = text.jaccard(q1, q2)
                if jac < 0.3:
                    continue
                if not differs_surely(c1, c2, rel):
                    continue
                scored.append((-jac, s1, s2, q1, q2))
        scored.sort()
        for _, s1, s2, q1, q2 in scored[:10]:
            cands.append((tool, s1, s2, q1, q2))
    for tool, s1, s2, q1, q2 in cands:
        h, p = rng.choice(hosts)
        yield mk("prose_different", False, h.tool, embed(h, p, q1), h.tool, embed(h, p, q2),
                 f"{bfcl(s1)} vs {bfcl(s2)} (different ground-truth calls of {tool}) as {p} of {bfcl(h.src)}")


def gen_prose_unrelated(calls, ctx, rng):
    hosts = ctx["hosts"]
    qs = questions(calls)
    for k in range(0, len(qs)):
        c1, s1, q1 = qs[k]
        c2, s2, q2 = qs[rng.randrange(len(qs))]
        if c1.tool == c2.tool or text.jaccard(q1, q2) > 0.1:
            continue
        h, p = rng.choice(hosts)
        yield mk("prose_unrelated", False, h.tool, embed(h, p, q1), h.tool, embed(h, p, q2),
                 f"{bfcl(s1)} vs {bfcl(s2)} (requests to {c1.tool} and {c2.tool}) as {p} of {bfcl(h.src)}")


# Parameter-name pairs whose values play opposite roles: swapping them is another action.
_DIRECTIONAL = [
    ("from", "to"), ("source", "destination"), ("origin", "destination"), ("start", "end"),
    ("departure", "arrival"), ("departure", "destination"), ("sender", "recipient"),
    ("sender", "receiver"), ("src", "dst"), ("base", "target"), ("in", "out"), ("buy", "sell"),
    ("home", "away"), ("pickup", "dropoff"),
    ("check_in", "check_out"), ("checkin", "checkout"), ("old", "new"), ("numerator", "denominator"),
    ("dividend", "divisor"), ("part", "whole"),
]
# Non-commutative operand pairs of particular tools.
_OPERANDS = {
    ("subtract", "a", "b"), ("divide", "a", "b"), ("power", "base", "exponent"),
    ("math.power", "base", "exponent"), ("percentage", "part", "whole"),
    ("logarithm", "value", "base"),
}


def _split_words(name):
    return [t for t in re.split(r"[._\s]+|(?<=[a-z])(?=[A-Z])", name) if t]


def directional(tool, p, q):
    if (tool, p, q) in _OPERANDS:
        return True
    wp, wq = [w.lower() for w in _split_words(p)], [w.lower() for w in _split_words(q)]
    if len(wp) != len(wq):
        # e.g. "travel_from" / "travel_to", "start_date" / "end_date", "from" / "to"
        pass
    for x, y in _DIRECTIONAL:
        xw, yw = x.split("_"), y.split("_")
        for i in range(len(wp)):
            if wp[i:i + len(xw)] == xw:
                rest_p = wp[:i] + ["*"] + wp[i + len(xw):]
                for j in range(len(wq)):
                    if wq[j:j + len(yw)] == yw:
                        rest_q = wq[:j] + ["*"] + wq[j + len(yw):]
                        if rest_p == rest_q:
                            return True
    return False


def directional_pairs(c):
    keys = list(c.args)
    out = []
    for i in range(len(keys)):
        for j in range(len(keys)):
            if i == j:
                continue
            p, q = keys[i], keys[j]
            if not directional(c.tool, p, q):
                continue
            v1, v2 = c.args[p], c.args[q]
            if jtype(v1) != jtype(v2) or jtype(v1) in ("list", "dict", "null"):
                continue
            if text.same_folded(v1, v2):
                continue
            out.append((p, q))
    return out


def gen_swapped(calls, ctx, rng):
    for c in calls:
        for p, q in directional_pairs(c):
            b = dict(c.args)
            b[p], b[q] = c.args[q], c.args[p]
            yield mk("swapped", False, c.tool, c.args, c.tool, b, f"{bfcl(c.src)} ({p} <-> {q})")


def from_to_cue(q, v1, v2):
    """The two values stand in a "from X to Y" (or "X to Y") order in the text, not "between X
    and Y" or a list, so swapping them reverses a direction."""
    first, second = sorted([v1, v2], key=lambda v: q.find(v))
    i, j = q.find(first), q.find(second)
    before, middle = q[max(0, i - 25):i].lower(), q[i + len(first):j].lower()
    if "between" in before or " and " in middle or len(middle) > 40:
        return False
    return bool(re.search(r"\b(from|departing|leaving|convert|base)\b", before + " ") and
                re.search(r"\b(to|into|for|->)\b", middle))


def gen_prose_swap_derived(calls, ctx, rng):
    """A real request whose two directional argument values both occur once in its text, and
    the same text with the two swapped ("from A to B" / "from B to A"). Derived, not corpus."""
    hosts = ctx["hosts"]
    for c, src, q in questions(calls):
        for p, r in directional_pairs(c):
            if not (isinstance(c.args[p], str) and isinstance(c.args[r], str)):
                continue
            v1, v2 = c.args[p], c.args[r]
            if len(v1) < 2 or len(v2) < 2 or v1 in v2 or v2 in v1:
                continue
            if equiv.parse_date(v1) or equiv.parse_date(v2) or re.fullmatch(r"[\d\s:.-]+", v1 + v2):
                continue   # "from 2010 to 2015" read backwards is still the same span
            pat1 = re.compile(r"(?<![\w.])" + re.escape(v1) + r"(?![\w])")
            pat2 = re.compile(r"(?<![\w.])" + re.escape(v2) + r"(?![\w])")
            if len(pat1.findall(q)) != 1 or len(pat2.findall(q)) != 1:
                continue
            if not from_to_cue(q, v1, v2):
                continue
            swapped = pat1.sub("\x00", q)
            swapped = pat2.sub(lambda m: v1, swapped)
            swapped = swapped.replace("\x00", v2)
            if swapped == q:
                continue
            h, hp = rng.choice(hosts)
            yield mk("prose_swap_derived", False, h.tool, embed(h, hp, q), h.tool, embed(h, hp, swapped),
                     f"{bfcl(src)} with '{v1}' and '{v2}' ({p}/{r}) swapped in the text, as {hp} of {bfcl(h.src)}")
            break


CONTRACTIONS = [
    ("I'm", "I am"), ("it's", "it is"), ("don't", "do not"), ("can't", "cannot"),
    ("you're", "you are"), ("we're", "we are"), ("they're", "they are"), ("isn't", "is not"),
    ("won't", "will not"), ("I'd like", "I would like"), ("what's", "what is"),
    ("doesn't", "does not"), ("I've", "I have"), ("there's", "there is"), ("aren't", "are not"),
]


IMPERATIVE = re.compile(r"(Find|Get|Book|Send|Create|Show|List|Search|Retrieve|Tell|Give|Add|Calculate|"
                        r"Check|Set|Play|Order|Fetch|Provide|Schedule|Cancel|Update|Remove|Delete|Buy)\b")


def minor_edits(s):
    """Meaning-preserving edits of a sentence, of the sort BFCL's own accepted alternatives show
    ("... tomorrow" / "... tomorrow.", "they're" / "they are"). Returns (punctuation edits,
    wording edits)."""
    punct, out = [], []
    if s[-1:] in ".!?":
        punct.append((s[:-1], "final punctuation dropped"))
    elif s[-1:].isalnum():
        punct.append((s + ".", "final period added"))
    m = re.match(r"(Can|Could) you\b", s)
    if m:
        other = "Could" if m[1] == "Can" else "Can"
        out.append((other + s[len(m[1]):], f"'{m[1]} you' -> '{other} you'"))
    if IMPERATIVE.match(s):
        out.append(("Please " + s[0].lower() + s[1:], "'Please' added"))
    m = re.match(r"Please,? (\w)", s)
    if m and IMPERATIVE.match(s[m.start(1):][0].upper() + s[m.start(1) + 1:]):
        rest = s[m.start(1):]
        out.append((rest[0].upper() + rest[1:], "'Please' dropped"))
    for short, long in CONTRACTIONS:
        for a, b in ((short, long), (long, short)):
            m = re.search(r"(?<![\w'])" + re.escape(a) + r"(?![\w'])", s, flags=re.I)
            if m:
                rep = b if m.group(0)[0].islower() or a[0] == "I" else b[0].upper() + b[1:]
                out.append((s[:m.start()] + rep + s[m.end():], f"'{m.group(0)}' -> '{rep}'"))
    return punct, out


def pick_edit(s, rng):
    punct, wording = minor_edits(s)
    if wording and (not punct or rng.random() < 0.75):
        return rng.choice(wording)
    return rng.choice(punct) if punct else (None, None)


def gen_prose_edit_derived(calls, ctx, rng):
    """Duplicates: a free-text argument (a real one, or a BFCL request in a host call) and the
    same text with one meaning-preserving edit. Derived, labelled by construction."""
    hosts = ctx["hosts"]
    for c in calls:
        for k, v in c.args.items():
            if text.is_prose_field(k, v):
                new, how = pick_edit(text.norm_str(v), rng)
                if new and text.norm_str(v) == v:
                    yield mk("prose_edit_derived", True, c.tool, c.args, c.tool, set_path(c.args, (k,), new),
                             f"{bfcl(c.src)} ({k}: {how})")
    for c, src, q in questions(calls):
        new, how = pick_edit(q, rng)
        if not new:
            continue
        h, p = rng.choice(hosts)
        yield mk("prose_edit_derived", True, h.tool, embed(h, p, q), h.tool, embed(h, p, new),
                 f"{bfcl(src)} request ({how}) as {p} of {bfcl(h.src)}")


def gen_prose_value_changed_derived(calls, ctx, rng):
    """Distinct: a single-turn BFCL request that spells out one of its call's identity values
    (a city, an amount, a name, an id) once, and the same request with that value replaced by
    another value the parameter takes elsewhere in BFCL: nearly the same words, another action."""
    hosts, rel, pools = ctx["hosts"], ctx["rel"], ctx["pools"]
    for c, src, q in questions(calls):
        spots = []
        for k, v in c.args.items():
            if not is_identity_param(k, v) or isinstance(v, bool):
                continue
            sv = str(v) if not isinstance(v, float) or not v.is_integer() else str(int(v))
            if len(sv) < 2:
                continue
            pat = re.compile(r"(?<![\w.])" + re.escape(sv) + r"(?![\w]|\.\d)")
            if len(pat.findall(q)) == 1:
                spots.append((k, v, sv, pat))
        if not spots:
            continue
        k, v, sv, pat = rng.choice(spots)
        alts = [v] + c.alts.get(k, [])
        # values of this very parameter first; other tools' values only for short names/places
        pool = list(pools.get((c.tool, k), []))
        if isinstance(v, str) and not text.PROSE_NAME.search(k):
            pool += [x for x in pools.get(k.lower(), []) if isinstance(x, str) and len(text.words(x)) <= 4
                     and not text.is_prose_value(x)]
        if isinstance(v, (int, float)):
            new, _ = _perturb(v, {}, rng)
            if new is not None:
                pool = pool + [new]
        order = list(range(len(pool)))
        rng.shuffle(order)
        for idx in order:
            x = pool[idx]
            if jtype(x) != jtype(v) or any(rel.related(x, a) for a in alts):
                continue
            sx = str(x) if not isinstance(x, float) or not x.is_integer() else str(int(x))
            if not sx.strip() or sx in q or len(sx) > 60:
                continue
            new_q = pat.sub(lambda m: sx, q)
            h, p = rng.choice(hosts)
            yield mk("prose_value_changed_derived", False, h.tool, embed(h, p, q), h.tool, embed(h, p, new_q),
                     f"{bfcl(src)} request with its {k} '{sv}' replaced by '{sx}' (another BFCL value), "
                     f"as {p} of {bfcl(h.src)}")
            break


# ------------------------------------------------------------------------- identity_changed

SENTINELS = {"dontcare", "any", "all", "none", "null", "n/a", "", "unknown", "default"}


def shape(v):
    """Coarse look of a value, so a replacement from another tool looks like the original."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if not isinstance(v, str):
        return jtype(v)
    if equiv.parse_date(v):
        return "date"
    if EMAIL.fullmatch(v):
        return "email"
    if "://" in v:
        return "url"
    if re.fullmatch(r"[^\s]+\.[A-Za-z0-9]{2,4}", v):
        return "file"
    if " " not in v and re.search(r"[\d_]", v):
        return "code"
    return "words" if " " in v.strip() else "word"


def replacement(v, alts, same_tool_pool, name_pool, rel, rng):
    """A value of the same parameter elsewhere in BFCL that nothing relates to v (same tool
    first; another tool's value only if it looks alike)."""
    for pool, need_shape in ((same_tool_pool, False), (name_pool, True)):
        order = list(range(len(pool)))
        rng.shuffle(order)
        for idx in order:
            x = pool[idx]
            if jtype(x) != jtype(v) or (isinstance(x, str) and x.strip().lower() in SENTINELS):
                continue
            if need_shape and shape(x) != shape(v):
                continue
            if any(rel.related(x, a) for a in alts):
                continue
            return x
    return None


def _perturb(v, node, rng):
    """A realistic different value for a scalar with no usable pool value."""
    if isinstance(v, bool):
        return (not v), "flipped"
    enum = node.get("enum")
    if enum:
        opts = [e for e in enum if not text.same_folded(e, v)]
        if opts:
            return rng.choice(opts), "another enum value"
    if isinstance(v, int):
        delta = rng.choice([1, 2, 5, 10]) if abs(v) < 100 else max(1, abs(v) // rng.choice([2, 4, 10]))
        return v + delta if rng.random() < 0.7 or v - delta < 0 else v - delta, "changed number"
    if isinstance(v, float):
        return round(v * rng.choice([1.5, 2.0, 0.5, 1.1]) + (0 if v else 1.0), 4), "changed number"
    if isinstance(v, str):
        d = equiv.parse_date(v)
        m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", v)
        if d and m:
            import datetime as dt
            nd = d + dt.timedelta(days=rng.choice([1, 2, 7, -1]))
            return nd.isoformat(), "date moved"
    return None, None


def gen_identity_changed(calls, ctx, rng):
    rel, pools = ctx["rel"], ctx["pools"]
    by_tool = {}
    for c in calls:
        by_tool.setdefault(c.tool, []).append(c)
    # 1. Real calls of one tool that differ in exactly one identity argument.
    for tool in sorted(by_tool):
        cs = by_tool[tool]
        for i in range(len(cs)):
            for j in range(i + 1, len(cs)):
                c1, c2 = cs[i], cs[j]
                if list(c1.args) != list(c2.args):
                    continue
                d = [k for k in c1.args if not text.same(c1.args[k], c2.args[k])]
                if len(d) != 1:
                    continue
                k = d[0]
                if not is_identity_param(k, c1.args[k]) or not is_identity_param(k, c2.args[k]):
                    continue
                if not differs_surely(c1, c2, rel):
                    continue
                yield mk("identity_changed", False, tool, c1.args, tool, c2.args,
                         f"{bfcl(c1.src)} vs {bfcl(c2.src)} (real calls differing in {k})")
    # 2. One identity argument replaced by a value the same parameter takes elsewhere in BFCL,
    #    or (no such value) by a changed number / other enum value / flipped flag / moved date.
    for c in calls:
        params = [k for k, v in c.args.items() if is_identity_param(k, v)]
        if not params:
            continue
        k = rng.choice(params)
        v = c.args[k]
        alts = [v] + c.alts.get(k, [])
        new = None
        if not isinstance(v, bool):
            new = replacement(v, alts, pools.get((c.tool, k), []), pools.get(k.lower(), []), rel, rng)
            how = "value seen for this parameter elsewhere in BFCL"
        if new is None:
            new, how = _perturb(v, schema_at(c.schema, (k,)), rng)
            if new is None or any(rel.related(new, a) for a in alts):
                continue
        yield mk("identity_changed", False, c.tool, c.args, c.tool, set_path(c.args, (k,), new),
                 f"{bfcl(c.src)} ({k}: {how})")


# ------------------------------------------------------------------------- different_tool

_TYPE_OK = {
    "str": {"string"}, "num": {"integer", "float", "number"}, "bool": {"boolean"},
    "list": {"array", "tuple"}, "dict": {"dict", "object"}, "null": set(),
}


def fits(args, schema):
    props = schema.get("properties", {})
    if not set(args) <= set(props):
        return False
    if not set(schema.get("required", [])) <= set(args):
        return False
    for k, v in args.items():
        t = props[k].get("type")
        if t not in _TYPE_OK[jtype(v)] and t != "any":
            return False
        if isinstance(v, int) and not isinstance(v, bool) and t == "integer":
            pass
        if isinstance(v, float) and t == "integer" and not v.is_integer():
            return False
        enum = props[k].get("enum")
        if enum and v not in enum:
            return False
    return True


GENERIC_TOKENS = text.READ_VERBS | {"info", "details", "data", "by", "of", "for", "the", "api", "tool"}


def gen_different_tool(calls, ctx, rng):
    catalog = ctx["catalog"]   # tool name -> schema (first variant)
    names = sorted(catalog)
    for c in calls:
        if not c.args:
            continue
        best = []
        tc = set(text.name_tokens(c.tool))
        for n in names:
            if n == c.tool:
                continue
            s = catalog[n]
            if not fits(c.args, s):
                continue
            tn = set(text.name_tokens(n))
            if tn == tc:
                continue   # same words, other spelling: too close to call another action
            shared = len((tn & tc) - GENERIC_TOKENS)
            ratio = difflib.SequenceMatcher(None, c.tool.lower(), n.lower()).ratio()
            if shared == 0 and ratio < 0.6:
                continue
            best.append((-(shared + ratio), n))
        if not best:
            continue
        best.sort()
        top = [n for _, n in best[:3]]
        other = rng.choice(top)
        yield mk("different_tool", False, c.tool, c.args, other, copy.deepcopy(c.args),
                 f"{bfcl(c.src)} (same arguments to {other}, another BFCL tool)")


GENERATORS = [
    ("key_order", gen_key_order),
    ("whitespace", gen_whitespace),
    ("case_insensitive", gen_case_insensitive),
    ("number_form", gen_number_form),
    ("schema_default", gen_schema_default),
    ("metadata", gen_metadata),
    ("alternatives", gen_alternatives),
    ("paraphrase_questions", gen_paraphrase_questions),
    ("identity_changed", gen_identity_changed),
    ("swapped", gen_swapped),
    ("different_tool", gen_different_tool),
    ("prose_different", gen_prose_different),
    ("prose_swap_derived", gen_prose_swap_derived),
    ("prose_unrelated", gen_prose_unrelated),
    ("prose_edit_derived", gen_prose_edit_derived),
    ("prose_value_changed_derived", gen_prose_value_changed_derived),
]
