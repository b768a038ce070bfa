"""Training pairs for the pair scorer (`idem train-scorer`): free text a, free text b, label.

Deterministic (no randomness beyond a seeded `random.Random`). Inputs are public corpora
brought in as files (SICK, STS-B without MSRpar) and the BFCL prose pairs of
benches/data/pairs.jsonl; the derived kinds (word swaps, negation and antonym insertions,
meaning-preserving reorderings, one-word synonyms) are made here from those sentences.
Every pair gets a split from a hash of its base sentence (derived pairs follow their base,
so no sentence is in two splits): 80 % train, 10 % calib (Platt scaling), 10 % heldout.

    python3 -m scripts.build_pairs.judge_pairs --sick SICK.txt --stsb sts-train.csv \
        --bfcl benches/data/pairs.jsonl --out judge_pairs.jsonl --calls-out heldout_calls.jsonl

See benches/data/judge/README.md for the provenance and licence of each source.
"""

import argparse
import csv
import hashlib
import json
import random
import re

SEED = 14
FUNCTION = set(
    """a an the please kindly can could would will you me i we us it this that is are be do and or
    so just hi hello hey thanks thank pls ok okay there here for to of my our your his her its their
    them they he she was were been being has have had does did am in on at by with from as into
    what which who whom whose when where why how if then than also some any""".split()
)
AUX = ["is", "are", "was", "were", "will", "can", "should", "could", "would", "has", "have", "does", "do", "did"]
ANTONYMS = [
    ("enable", "disable"), ("start", "stop"), ("open", "close"), ("add", "remove"),
    ("increase", "decrease"), ("buy", "sell"), ("lock", "unlock"), ("accept", "reject"),
    ("before", "after"), ("upload", "download"), ("include", "exclude"), ("show", "hide"),
    ("allow", "deny"), ("win", "lose"), ("push", "pull"), ("import", "export"),
    ("cheapest", "most expensive"), ("first", "last"), ("minimum", "maximum"), ("public", "private"),
    ("inside", "outside"), ("up", "down"), ("above", "below"), ("old", "new"), ("young", "old"),
    ("big", "small"), ("large", "small"), ("hot", "cold"), ("early", "late"), ("high", "low"),
    ("long", "short"), ("arrive", "depart"), ("entering", "leaving"), ("sitting", "standing"),
    ("asc", "desc"), ("ascending", "descending"), ("north", "south"), ("east", "west"),
    ("more", "less"), ("max", "min"), ("subscribe", "unsubscribe"), ("follow", "unfollow"),
]
SYNONYMS = [
    ("investigate", "look into"), ("best", "recommended"), ("get", "fetch"), ("find", "look up"),
    ("show", "display"), ("buy", "purchase"), ("big", "large"), ("quick", "fast"),
    ("begin", "start"), ("help", "assist"), ("tell", "inform"), ("check", "verify"),
    ("make", "create"), ("give", "provide"), ("need", "require"), ("list", "enumerate"),
    ("retrieve", "get"), ("search for", "look for"), ("book", "reserve"), ("cancel", "call off"),
    ("latest", "most recent"), ("info", "information"), ("details", "information"),
    ("calculate", "compute"), ("delete", "remove"), ("send", "dispatch"), ("plan", "schedule"),
    ("movie", "film"), ("car", "automobile"), ("kids", "children"), ("boy", "kid"),
    ("man", "guy"), ("woman", "lady"), ("is playing", "plays"), ("photo", "picture"),
]
PREPS = ["by", "before", "after", "on", "in", "at", "for", "during", "from", "with"]


def stsb_rows(lines):
    """Labelled STS-B rows: (columns, duplicate) for each line, `MSRpar` dropped (it comes from
    MRPC); score >= 4.2 a repeat, < 3.6 distinct, in between dropped."""
    for line in lines:
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 7 or cols[1] == "MSRpar":
            continue
        score = float(cols[4])
        if score >= 4.2:
            yield cols, True
        elif score < 3.6:
            yield cols, False


def split_of(key):
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10
    return "heldout" if h == 0 else "calib" if h == 1 else "train"


def words(s):
    return s.split()


def content(w):
    core = re.sub(r"[^A-Za-z]", "", w)
    return len(core) >= 3 and core.lower() not in FUNCTION and core == w.strip(".,!?;:")


def word_swap(s, rng):
    ws = words(s)
    idx = [i for i, w in enumerate(ws) if content(w)]
    cands = [(i, j) for i in idx for j in idx if i < j and ws[i].lower().strip(".,!?") != ws[j].lower().strip(".,!?")]
    if not cands:
        return None
    i, j = rng.choice(cands)
    wi, wj = ws[i], ws[j]
    ti, tj = re.match(r"(.*?)([.,!?;:]*)$", wi).groups(), re.match(r"(.*?)([.,!?;:]*)$", wj).groups()
    ws[i], ws[j] = tj[0] + ti[1], ti[0] + tj[1]
    out = " ".join(ws)
    return out if out != s else None


def negate(s):
    ws = words(s)
    for i, w in enumerate(ws):
        if w.lower() in AUX and i + 1 < len(ws) and ws[i + 1].lower() != "not":
            return " ".join(ws[: i + 1] + ["not"] + ws[i + 1 :])
    start = 1 if ws and ws[0].lower().strip(",") == "please" else 0
    if start < len(ws) and ws[start][:1].isalpha():
        first = ws[start]
        lead = "Do not" if start == 0 else "do not"
        if start == 0:
            first = first[:1].lower() + first[1:]
        return " ".join(ws[:start] + [lead, first] + ws[start + 1 :])
    return None


def swap_phrase(s, table, rng):
    low = " " + s.lower() + " "
    opts = []
    for x, y in table:
        for p, q in ((x, y), (y, x)):
            if re.search(r"\b" + re.escape(p) + r"\b", low):
                opts.append((p, q))
    if not opts:
        return None
    p, q = rng.choice(opts)
    out = re.sub(r"\b" + re.escape(p) + r"\b", q, s, count=1, flags=re.IGNORECASE)
    return out if out != s else None


def front_phrase(s):
    body = s.rstrip(".!?")
    end = s[len(body):]
    ws = words(body)
    if "," in body or len(ws) < 5:
        return None
    for k in range(len(ws) - 2, max(1, len(ws) - 6), -1):
        if ws[k].lower() in PREPS:
            head, tail = ws[:k], ws[k:]
            w = head[0]
            first = w[:1].lower() + w[1:] if w != "I" and (len(w) == 1 or w[1:].islower()) else w
            return " ".join([tail[0][:1].upper() + tail[0][1:]] + tail[1:]) + ", " + " ".join([first] + head[1:]) + end
    return None


def compound(s):
    m = re.search(r"\bthe (\w+(?: \w+)?) (for|of) the (\w+(?: \w+)?)\b", s)
    if not m:
        return None
    if any(not content(w) for w in (m.group(1) + " " + m.group(3)).split()):
        return None
    return s[: m.start()] + "the " + m.group(3) + " " + m.group(1) + s[m.end():]


def derived(base, rng):
    out = []
    sw = word_swap(base, rng)
    if sw:
        out.append(("word_swap_derived", sw, False))
    ng = negate(base)
    if ng:
        out.append(("negation_derived", ng, False))
    an = swap_phrase(base, ANTONYMS, rng)
    if an:
        out.append(("antonym_derived", an, False))
    fr = front_phrase(base)
    if fr:
        out.append(("fronted_phrase_derived", fr, True))
    co = compound(base)
    if co:
        out.append(("noun_compound_derived", co, True))
    sy = swap_phrase(base, SYNONYMS, rng)
    if sy:
        out.append(("synonym_derived", sy, True))
    return out


def prose(args):
    parts = [v for _, v in sorted(args.items()) if isinstance(v, str) and len(v.split()) >= 3]
    return " ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sick", required=True)
    ap.add_argument("--stsb", required=True)
    ap.add_argument("--bfcl", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calls-out", required=True, help="heldout pairs as tool calls, for idem calibrate")
    ap.add_argument("--calib-calls-out", help="calib pairs as tool calls (to choose thresholds on)")
    ap.add_argument("--select-calls-out", help="calib calls plus the train split of --bfcl: what idem calibrate chooses the defaults on")
    ap.add_argument("--max-sick", type=int, default=3500)
    ap.add_argument("--max-stsb", type=int, default=3000)
    ap.add_argument("--max-bases", type=int, default=1500)
    a = ap.parse_args()
    rng = random.Random(SEED)
    pairs = []
    bases = []

    sick = []
    with open(a.sick, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rel, lab = float(row["relatedness_score"]), row["entailment_judgment"]
            if lab == "ENTAILMENT" and rel >= 4.6:
                dup = True
            elif lab == "CONTRADICTION" or (lab == "NEUTRAL" and rel < 4.6):
                dup = False
            else:
                continue
            sick.append((row["sentence_A"], row["sentence_B"], dup, "sick:" + row["pair_ID"]))
    rng.shuffle(sick)
    for x, y, d, src in sick[: a.max_sick]:
        pairs.append({"a": x, "b": y, "duplicate": d, "kind": "sick", "source": src, "split": split_of(x)})
        bases.append((x, "sick"))

    sts = []
    with open(a.stsb, encoding="utf-8") as f:
        for cols, dup in stsb_rows(f):
            sts.append((cols[5], cols[6], dup, "stsb:%s/%s/%s" % (cols[1], cols[2], cols[3])))
    rng.shuffle(sts)
    for x, y, d, src in sts[: a.max_stsb]:
        pairs.append({"a": x, "b": y, "duplicate": d, "kind": "stsb", "source": src, "split": split_of(x)})
        bases.append((x, "stsb"))

    calls = []
    with open(a.bfcl, encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            k = p["kind"]
            sp = split_of(p["id"])
            if sp in ("heldout", "calib"):
                calls.append(dict(p, split=sp))
            if not (k.startswith("prose") or k == "paraphrase"):
                continue
            x, y = prose(p["a"]["args"]), prose(p["b"]["args"])
            if not x or not y:
                continue
            pairs.append({"a": x, "b": y, "duplicate": p["duplicate"], "kind": "bfcl_" + k, "source": "bfcl-pairs:" + p["id"], "split": sp})
            bases.append((x, "bfcl"))

    seen = set()
    uniq = []
    for b, src in bases:
        if b not in seen and 4 <= len(b.split()) <= 40:
            seen.add(b)
            uniq.append((b, src))
    rng.shuffle(uniq)
    n = 0
    for b, src in uniq:
        if n >= a.max_bases:
            break
        made = derived(b, rng)
        if not made:
            continue
        n += 1
        for kind, text, dup in made:
            pairs.append({"a": b, "b": text, "duplicate": dup, "kind": kind, "source": "derived:" + src, "split": split_of(b)})
    with open(a.out, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    # Text pairs of the heldout and calib splits also as tool calls, for `idem calibrate`: the
    # free text as the body of a message to one recipient (identity equal, so the judge decides).
    for n, p in enumerate(pairs):
        if p["split"] in ("heldout", "calib") and not p["kind"].startswith("bfcl_"):
            calls.append({
                "id": "%s-%05d" % (p["kind"], n), "kind": p["kind"], "duplicate": p["duplicate"],
                "a": {"tool": "send_message", "args": {"recipient": "ops@example.com", "body": p["a"]}},
                "b": {"tool": "send_message", "args": {"recipient": "ops@example.com", "body": p["b"]}},
                "source": p["source"], "split": p["split"],
            })
    outs = {"heldout": a.calls_out, "calib": a.calib_calls_out}
    for sp, path in outs.items():
        if not path:
            continue
        with open(path, "w", encoding="utf-8") as f:
            for p in calls:
                if p["split"] == sp:
                    f.write(json.dumps(p, ensure_ascii=False) + "\n")
    if a.select_calls_out:
        with open(a.select_calls_out, "w", encoding="utf-8") as f:
            for p in calls:
                if p["split"] == "calib":
                    f.write(json.dumps(p, ensure_ascii=False) + "\n")
            with open(a.bfcl, encoding="utf-8") as src:
                for line in src:
                    if split_of(json.loads(line)["id"]) == "train":
                        f.write(line)
    from collections import Counter
    c = Counter((p["kind"], p["duplicate"], p["split"]) for p in pairs)
    for k in sorted(c):
        print(k, c[k])


if __name__ == "__main__":
    main()
