"""Out-of-distribution check pairs for `idem calibrate` (figures only, never trained or tuned on).

STS-B's dev and test splits (the judge trains on its train split only), `MSRpar` dropped (it
comes from MRPC): score >= 4.2 a repeat, < 3.6 distinct, in between dropped, as the judge's
training data labels STS-B. Each pair becomes two `send_message` calls to one recipient with the
two sentences as bodies, as the held-out calls are built; `kind` is `ood_<genre>` (headlines
as `ood_news`).

    python3 -m scripts.build_pairs.ood_sts --dev $D/raw/sts-dev.csv --test $D/raw/sts-test.csv \\
        --out $D/ood_sts_calls.jsonl
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from judge_pairs import stsb_rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n = 0
    with open(a.out, "w", encoding="utf-8") as out:
        for path in (a.dev, a.test):
            name = path.rsplit("/", 1)[-1]
            with open(path, encoding="utf-8") as f:
                for cols, dup in stsb_rows(f):
                    news = cols[1] in ("headlines", "deft-news", "answers-news")
                    n += 1
                    out.write(json.dumps({
                        "id": "ood-%05d" % n, "kind": "ood_" + ("news" if news else cols[1]),
                        "duplicate": dup,
                        "a": {"tool": "send_message", "args": {"recipient": "ops@example.com", "body": cols[5]}},
                        "b": {"tool": "send_message", "args": {"recipient": "ops@example.com", "body": cols[6]}},
                        "source": "%s:%s/%s/%s" % (name, cols[1], cols[2], cols[3]), "split": "ood",
                    }, ensure_ascii=False) + "\n")
    print(n, "pairs")


if __name__ == "__main__":
    main()
