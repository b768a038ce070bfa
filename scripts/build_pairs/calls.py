"""The pool of real tool calls: BFCL ground-truth calls with their tool schemas.

Single-turn categories give, per parameter, the list of values the BFCL annotators accept
(`possible_answer`); the call we use takes the first non-empty one and keeps the rest as
human-labelled alternatives. Multi-turn categories give executed call strings
(`cd(folder='document')`), parsed with `ast` against the multi-turn function docs.
"""

import ast
import json
from dataclasses import dataclass, field

# Single-turn categories with Python-style JSON arguments (the Java/JavaScript ones carry
# source-code strings as values and are left out).
SINGLE_TURN = [
    "simple_python", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
]
MULTI_TURN = ["multi_turn_base", "multi_turn_long_context", "multi_turn_miss_func", "multi_turn_miss_param"]


@dataclass
class Call:
    tool: str
    args: dict                      # resolved arguments, in ground-truth order
    schema: dict                    # BFCL "parameters" object of the tool, as written for this entry
    src: str                        # BFCL entry id (+ "#tTcC" for multi-turn turn/call)
    entry: str                      # BFCL entry id
    cat: str
    alts: dict = field(default_factory=dict)   # top-level param -> other accepted values (human-labelled)
    optional_ok: set = field(default_factory=set)  # params the annotators accept omitted
    question: str = ""              # the user request of this call (single-call entries/turns only)
    questions: list = field(default_factory=list)  # (entry src, request) of every copy of this call

    def key(self):
        return (self.tool, canon(self.args))


def canon(v):
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def _resolve(alts):
    """First accepted value of a possible_answer alternative list, resolved recursively."""
    for a in alts:
        if a == "":
            continue
        return _resolve_value(a)
    return None


def _resolve_value(v):
    if isinstance(v, dict):
        out = {}
        for k, sub in v.items():
            if isinstance(sub, list):
                r = _resolve(sub)
                if r is not None:
                    out[k] = r
            else:
                out[k] = sub
        return out
    return v


def _user_text(turn):
    return "\n".join(m["content"] for m in turn if m.get("role") == "user").strip()


def load_single_turn(data):
    calls = []
    for cat in SINGLE_TURN:
        questions = {q["id"]: q for q in data.jsonl(f"BFCL_v4_{cat}.json")}
        for ans in data.jsonl(f"possible_answer/BFCL_v4_{cat}.json"):
            q = questions[ans["id"]]
            docs = {f["name"]: f for f in q["function"]}
            gt = ans["ground_truth"]
            text = _user_text(q["question"][0]) if len(q["question"]) == 1 and len(gt) == 1 else ""
            for i, call in enumerate(gt):
                (tool, params), = call.items()
                doc = docs.get(tool)
                if doc is None:
                    continue
                args, alts, optional = {}, {}, set()
                for p, alt_list in params.items():
                    if "" in alt_list:
                        optional.add(p)
                    v = _resolve(alt_list)
                    if v is None:
                        continue
                    args[p] = v
                    others = []
                    for a in alt_list:
                        if a == "":
                            continue
                        r = _resolve_value(a)
                        if canon(r) != canon(v) and all(canon(r) != canon(o) for o in others):
                            others.append(r)
                    if others:
                        alts[p] = others
                src = ans["id"] if len(gt) == 1 else f"{ans['id']}#c{i}"
                calls.append(Call(tool, args, doc["parameters"], src, ans["id"], cat, alts, optional, text))
    return calls


def multi_turn_docs(data):
    docs = {}
    for name in data.names():
        if name.startswith("multi_turn_func_doc/") and name.endswith(".json"):
            for f in data.jsonl(name):
                docs[f["name"]] = f
    return docs


def parse_call_string(s, docs):
    node = ast.parse(s.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    tool = node.func.id
    doc = docs.get(tool)
    if doc is None:
        return None
    order = list(doc["parameters"]["properties"])
    args = {}
    for i, a in enumerate(node.args):
        if i >= len(order):
            return None
        args[order[i]] = ast.literal_eval(a)
    for kw in node.keywords:
        if kw.arg is None:
            return None
        args[kw.arg] = ast.literal_eval(kw.value)
    return tool, args, doc


def load_multi_turn(data):
    docs = multi_turn_docs(data)
    calls = []
    for cat in MULTI_TURN:
        questions = {q["id"]: q for q in data.jsonl(f"BFCL_v4_{cat}.json")}
        for ans in data.jsonl(f"possible_answer/BFCL_v4_{cat}.json"):
            q = questions.get(ans["id"])
            for t, turn in enumerate(ans["ground_truth"]):
                text = ""
                if q is not None and t < len(q["question"]) and len(turn) == 1:
                    text = _user_text(q["question"][t])
                for c, s in enumerate(turn):
                    parsed = parse_call_string(s, docs)
                    if parsed is None:
                        continue
                    tool, args, doc = parsed
                    calls.append(Call(tool, args, doc["parameters"], f"{ans['id']}#t{t}c{c}", ans["id"], cat,
                                      question=text))
    return calls


def load_calls(data):
    """All calls, de-duplicated on (tool, arguments), first by source order kept."""
    seen = {}
    out = []
    for c in load_single_turn(data) + load_multi_turn(data):
        k = c.key()
        if c.question:
            c.questions = [(c.src, c.question)]
        if k in seen:
            prev = seen[k]
            if c.question and all(c.question != q for _, q in prev.questions):
                prev.questions.append((c.src, c.question))
            # keep alternatives from any copy
            for p, o in c.alts.items():
                prev.alts.setdefault(p, o)
            continue
        seen[k] = c
        out.append(c)
    return out


def load_catalog(data):
    """Every function doc BFCL offers (called or distractor): name -> list of (src, parameters)."""
    cat = {}
    for c in SINGLE_TURN:
        for q in data.jsonl(f"BFCL_v4_{c}.json"):
            for f in q["function"]:
                cat.setdefault(f["name"], []).append((q["id"], f["parameters"]))
    for name, f in sorted(multi_turn_docs(data).items()):
        cat.setdefault(name, []).append(("multi_turn_func_doc", f["parameters"]))
    return cat
