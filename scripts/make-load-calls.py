#!/usr/bin/env python3
"""Writes benches/data/load_calls.jsonl: agent-like tool calls ({tool, args}) whose free text is
10-40 words, for load runs (`idem bench`, ../shared/tools/grpc_probe.py load). Deterministic
(seeded); the texts are made here from word lists, not taken from any corpus."""
import json
import random
import sys

rng = random.Random(7)
PEOPLE = ["alice", "bob", "carol", "dmitri", "eun-ji", "farah", "gustavo", "hana", "ivan", "jun"]
PROJECTS = ["PAY", "WEB", "OPS", "DATA", "MOBILE", "INFRA"]
OPENERS = ["Please", "Could you", "Kindly", "I need you to", "Go ahead and", "Make sure to"]
VERBS = ["send", "prepare", "review", "summarise", "update", "share", "check", "draft"]
OBJECTS = ["the quarterly report", "the onboarding checklist", "the incident summary",
           "the revised budget", "the release notes", "the meeting agenda", "the vendor contract",
           "the customer feedback digest", "the migration plan", "the security review"]
TAILS = ["before the end of the week", "so the team can discuss it on the next call",
         "and flag anything that looks unusual", "with the latest numbers from the dashboard",
         "including the open questions from last time", "and copy the project lead",
         "because the deadline moved up", "after checking it against the previous version",
         "and keep it short and readable", "so that finance can sign it off"]
FILLER = ["also", "note that", "if possible", "thanks in advance", "as discussed",
          "when you have a moment", "the usual format is fine", "attach the sources"]


def sentence(lo=10, hi=40):
    words = f"{rng.choice(OPENERS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}".split()
    target = rng.randint(lo, hi)
    while len(words) < target:
        words += (rng.choice(FILLER) + " " + rng.choice(TAILS)).split()
    return " ".join(words[:target]).rstrip(",") + "."


def call():
    kind = rng.randrange(3)
    if kind == 0:
        return {"tool": "send_email", "args": {"to": f"{rng.choice(PEOPLE)}@example.com",
                                               "subject": rng.choice(OBJECTS).title(), "body": sentence()}}
    if kind == 1:
        return {"tool": "create_ticket", "args": {"project": rng.choice(PROJECTS),
                                                  "priority": rng.choice(["low", "medium", "high"]),
                                                  "description": sentence()}}
    return {"tool": "post_message", "args": {"channel": f"#{rng.choice(PROJECTS).lower()}-team",
                                             "text": sentence()}}


n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
out = sys.argv[2] if len(sys.argv) > 2 else "benches/data/load_calls.jsonl"
with open(out, "w") as f:
    for _ in range(n):
        f.write(json.dumps(call()) + "\n")
