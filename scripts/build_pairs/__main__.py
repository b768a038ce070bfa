"""Builds idem's labelled calibration pairs (benches/data/pairs.jsonl) from real BFCL data.

    python3 scripts/build_pairs --out benches/data

Deterministic: the same wheel, seed and script give the same bytes. See benches/data/README.md.
"""

import argparse
import collections
import hashlib
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import calls as calls_mod  # noqa: E402
import equiv  # noqa: E402
import kinds  # noqa: E402
import source  # noqa: E402
import text  # noqa: E402

SCRIPT_VERSION = "1"
DEFAULT_SEED = 20240601

# How many pairs of each kind (fewer where BFCL has fewer candidates).
QUOTAS = {
    "key_order": 300, "whitespace": 300, "case_insensitive": 200, "number_form": 300,
    "schema_default": 300, "metadata": 300, "paraphrase": 400, "value_alias": 250,
    "identity_changed": 700, "swapped": 250, "different_tool": 350, "prose_different": 400,
    "prose_swap_derived": 200, "prose_unrelated": 150, "prose_edit_derived": 250,
    "prose_value_changed_derived": 300,
}
PER_TOOL_CAP = 12       # at most this many pairs of one kind about one tool (relaxed if short)
SIDE_EFFECT_SHARE = 0.6  # prefer tools that read like actions with side effects

# Handpicked pairs for benches/data/sample_pairs.jsonl (ids of pairs.jsonl).
SAMPLE_IDS = [
    "key_order-0003", "whitespace-0001", "case_insensitive-0001", "number_form-0001",
    "schema_default-0009", "metadata-0008", "paraphrase-0003", "value_alias-0004",
    "prose_edit_derived-0003", "identity_changed-0010", "identity_changed-0003", "swapped-0002",
    "swapped-0003", "different_tool-0008", "different_tool-0005", "prose_different-0006",
    "prose_value_changed_derived-0006", "prose_value_changed_derived-0002", "prose_swap_derived-0003",
    "prose_unrelated-0001",
]


def rng_for(seed, name):
    return random.Random(f"{seed}:{name}")


def build_context(data, calls):
    ctx = {}
    ev = {}
    for c in calls:
        for p, others in c.alts.items():
            v = c.args.get(p)
            if isinstance(v, str) and any(isinstance(o, str) and o != v and o.casefold() == v.casefold()
                                          for o in others):
                ev.setdefault((c.tool, p), c.src)
    ctx["case_evidence"] = ev

    catalog = calls_mod.load_catalog(data)
    for c in calls:
        catalog.setdefault(c.tool, []).append((c.src, c.schema))
    ctx["catalog"] = {n: v[0][1] for n, v in sorted(catalog.items())}
    ctx["catalog_variants"] = catalog

    defaults = {}
    for name, variants in sorted(catalog.items()):
        schemas = [s for _, s in variants]
        first = schemas[0].get("properties", {})
        d = {}
        for p, node in first.items():
            if "default" not in node:
                continue
            dv = node["default"]
            if isinstance(dv, str) and dv in ("None", "null"):
                continue
            ok = True
            for s in schemas:
                n2 = s.get("properties", {}).get(p)
                if n2 is None or "default" not in n2 or calls_mod.canon(n2["default"]) != calls_mod.canon(dv) \
                        or p in s.get("required", []):
                    ok = False
                    break
            if ok:
                d[p] = dv
        if d:
            defaults[name] = d
    ctx["defaults"] = defaults

    pools = collections.defaultdict(list)
    seen = set()
    for c in calls:
        for k, v in c.args.items():
            if isinstance(v, (dict, list)) or v is None:
                continue
            for key in ((c.tool, k), k.lower()):
                sig = (key, calls_mod.canon(v))
                if sig not in seen:
                    seen.add(sig)
                    pools[key].append(v)
    ctx["pools"] = pools
    ctx["rel"] = equiv.Relatedness(calls)
    ctx["hosts"] = kinds.host_calls(calls, ctx)
    return ctx


def select(cands, quota, rng):
    """Deterministic pick: shuffled, side-effect tools first up to a share, a cap per tool."""
    cands = list(cands)
    rng.shuffle(cands)
    side = [p for p in cands if p.side]
    other = [p for p in cands if not p.side]
    chosen, per_tool = [], collections.Counter()

    def take(pool, limit, cap):
        for p in pool:
            if len(chosen) >= limit:
                return
            if p in chosen_set or per_tool[p.tool] >= cap:
                continue
            chosen.append(p)
            chosen_set.add(p)
            per_tool[p.tool] += 1

    chosen_set = set()
    take(side, int(quota * SIDE_EFFECT_SHARE + 0.5), PER_TOOL_CAP)
    take(other, quota, PER_TOOL_CAP)
    take(side, quota, PER_TOOL_CAP)
    for cap in (PER_TOOL_CAP * 2, PER_TOOL_CAP * 4, 10**9):
        take(side + other, quota, cap)
    return chosen


def check(p, ctx):
    """Label sanity checks (fail loudly: a wrong label is worse than a missing pair)."""
    a, b = p.a, p.b
    if json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False):
        raise AssertionError(f"identical sides: {p.source}")
    if p.kind in ("key_order", "whitespace", "number_form"):
        assert a["tool"] == b["tool"] and text.same(a["args"], b["args"]), p.source
    if p.kind == "case_insensitive":
        assert text.same_folded(a["args"], b["args"]) and not text.same(a["args"], b["args"]), p.source
    if p.kind == "metadata":
        strip = lambda d: {k: v for k, v in d.items() if k not in kinds.META_FIELDS}
        assert text.same(strip(a["args"]), strip(b["args"])), p.source
    if p.kind == "schema_default":
        d = ctx["defaults"][a["tool"]]
        strip = lambda x: {k: v for k, v in x.items() if not (k in d and text.same(v, d[k]))}
        assert text.same(strip(a["args"]), strip(b["args"])), p.source
    if not p.duplicate:
        assert a["tool"] != b["tool"] or not text.same_folded(a["args"], b["args"]), p.source
    if p.kind in ("paraphrase", "prose_different", "prose_unrelated", "prose_swap_derived",
                  "prose_edit_derived", "prose_value_changed_derived",
                  "value_alias", "identity_changed", "swapped"):
        assert a["tool"] == b["tool"], p.source
        ka, kb = a["args"], b["args"]
        assert list(ka) == list(kb), p.source
        changed = [k for k in ka if not text.same(ka[k], kb[k])]
        assert len(changed) in (1, 2) and (len(changed) == 1 or p.kind == "swapped"), p.source


def to_json_schema(node):
    """BFCL parameter schema to JSON Schema (dict->object, float->number, tuple->array)."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, str):
            t = {"dict": "object", "float": "number", "tuple": "array"}.get(v, v)
            if t != "any":
                out["type"] = t
        elif k == "properties" and isinstance(v, dict):
            out[k] = {pk: to_json_schema(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties"):
            out[k] = to_json_schema(v)
        else:
            out[k] = v
    return out


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False)


def counts_table(records):
    by = collections.Counter((r["kind"], r["duplicate"]) for r in records)
    order = kinds.DUPLICATE_KINDS + kinds.DISTINCT_KINDS
    lines = ["| kind | duplicate | pairs |", "| --- | --- | ---: |"]
    for k in order:
        for d in (True, False):
            if by.get((k, d)):
                lines.append(f"| `{k}` | {str(d).lower()} | {by[(k, d)]} |")
    nd = sum(1 for r in records if r["duplicate"])
    lines.append(f"| **all** | true | {nd} |")
    lines.append(f"| **all** | false | {len(records) - nd} |")
    lines.append(f"| **all** | | {len(records)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (benches/data)")
    ap.add_argument("--bfcl-wheel", help=f"path of {source.BFCL_WHEEL} (else fetched with pip into --cache)")
    ap.add_argument("--cache", default=os.path.join("build", "pairs-cache"),
                    help="download cache for the wheel (default build/pairs-cache)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)

    wheel = args.bfcl_wheel or source.fetch_wheel(args.cache)
    data = source.open_wheel(wheel)
    calls = calls_mod.load_calls(data)
    ctx = build_context(data, calls)

    cands = collections.defaultdict(list)
    seen = set()
    for name, gen in kinds.GENERATORS:
        for p in gen(calls, ctx, rng_for(args.seed, name)):
            k = p.key()
            if k in seen:
                continue
            seen.add(k)
            cands[p.kind].append(p)

    records, chosen_by_kind = [], {}
    for kind in kinds.DUPLICATE_KINDS + kinds.DISTINCT_KINDS:
        chosen = select(cands.get(kind, []), QUOTAS[kind], rng_for(args.seed, "select:" + kind))
        for i, p in enumerate(chosen, 1):
            check(p, ctx)
            r = {"id": f"{kind}-{i:04d}"}
            r.update(p.record())
            records.append(r)
        chosen_by_kind[kind] = (len(chosen), len(cands.get(kind, [])))

    os.makedirs(args.out, exist_ok=True)
    pairs_path = os.path.join(args.out, "pairs.jsonl")
    with open(pairs_path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(dumps(r) + "\n")

    tools_used = sorted({r["a"]["tool"] for r in records} | {r["b"]["tool"] for r in records})
    with open(os.path.join(args.out, "tools.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for t in tools_used:
            n = len({calls_mod.canon(s) for _, s in ctx["catalog_variants"][t]})
            f.write(dumps({"tool": t, "parameters": to_json_schema(ctx["catalog"][t]),
                           "defaults": ctx["defaults"].get(t, {}), "bfcl_schema_variants": n}) + "\n")

    by_id = {r["id"]: r for r in records}
    missing = [i for i in SAMPLE_IDS if i not in by_id]
    if missing:
        raise SystemExit(f"sample ids not in the set: {missing}")
    with open(os.path.join(args.out, "sample_pairs.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for i in SAMPLE_IDS:
            f.write(dumps(by_id[i]) + "\n")

    table = counts_table(records)
    with open(os.path.join(args.out, "counts.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(table)
    readme = os.path.join(args.out, "README.md")
    if os.path.exists(readme):
        body = open(readme, encoding="utf-8").read()
        new = re.sub(r"(<!-- counts:start -->\n).*?(<!-- counts:end -->)",
                     lambda m: m[1] + table + m[2], body, flags=re.S)
        if new != body:
            with open(readme, "w", encoding="utf-8", newline="\n") as f:
                f.write(new)

    info = {
        "script": "scripts/build_pairs", "script_version": SCRIPT_VERSION, "seed": args.seed,
        "sources": [{"package": source.BFCL_PACKAGE, "version": source.BFCL_VERSION,
                     "file": source.BFCL_WHEEL, "sha256": source.BFCL_SHA256,
                     "license": data.license}],
        "calls_in_pool": len(calls),
        "pairs": len(records),
        "pairs_sha256": hashlib.sha256(open(pairs_path, "rb").read()).hexdigest(),
        "per_kind_selected_of_candidates": {k: {"selected": v[0], "candidates": v[1]}
                                            for k, v in chosen_by_kind.items()},
    }
    with open(os.path.join(args.out, "build_info.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    print(table, file=sys.stderr)
    print(f"wrote {len(records)} pairs to {pairs_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
