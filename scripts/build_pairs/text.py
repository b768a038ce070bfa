"""Small pure helpers: normal form for equality checks, word overlap, field roles."""

import json
import re
import unicodedata

_WS = re.compile(r"\s+")
_NUM = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def norm_str(s):
    return _WS.sub(" ", unicodedata.normalize("NFC", s)).strip()


def normalize(v):
    """Value normal form used only to *check* labels: sorted keys, NFC, trimmed and collapsed
    whitespace, one number form (5 == 5.0 == "5"). Case is kept."""
    if isinstance(v, dict):
        return {norm_str(k): normalize(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if isinstance(v, str):
        s = norm_str(v)
        if _NUM.fullmatch(s):
            return normalize(float(s)) if any(c in s for c in ".eE") else int(s)
        return s
    return v


def fold(v):
    """normalize() and case-folded strings: equality up to harmless case."""
    v = normalize(v)
    if isinstance(v, dict):
        return {k: fold(x) for k, x in v.items()}
    if isinstance(v, list):
        return [fold(x) for x in v]
    if isinstance(v, str):
        return v.casefold()
    return v


def same(a, b):
    return json.dumps(normalize(a), sort_keys=True) == json.dumps(normalize(b), sort_keys=True)


def same_folded(a, b):
    return json.dumps(fold(a), sort_keys=True) == json.dumps(fold(b), sort_keys=True)


_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


def tokens(s):
    return [t.lower() for t in _TOKEN.findall(s)]


def jaccard(a, b):
    x, y = set(tokens(a)), set(tokens(b))
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


def words(s):
    return [w for w in s.split() if w]


# Parameter names that carry prose (message bodies, descriptions, requests, queries).
PROSE_NAME = re.compile(
    r"(^|_)(message|content|body|text|description|comment|statement|prompt|note|notes|"
    r"instructions?|summary|caption|reason|feedback|review|bio|question|request|resolution|"
    r"comment_content|query|search_query|keywords?|answer|new_text|details)($|_)",
    re.I,
)
# Parameter names whose whitespace or case can matter (code, patterns, secrets).
LITERAL_NAME = re.compile(
    r"(pattern|regex|command|cmd|code|script|sql|function|func|expression|equation|formula|"
    r"password|secret|token|key|hash|path|url|uri|file|folder|dir|query_string|format|json)",
    re.I,
)


def looks_structured(s):
    low = s.lower()
    return ("://" in s or low.startswith(("select ", "{", "[", "lambda")) or
            any(c in s for c in "{}=<>\\|`") or re.search(r"\w\*\*|\w\(.*\)", s) is not None)


def is_prose_value(s):
    """A sentence-like string: several words, mostly letters, nothing code- or id-like."""
    if not isinstance(s, str):
        return False
    ws = words(s)
    if len(ws) < 4 or looks_structured(s):
        return False
    alpha = sum(1 for w in ws if sum(c.isalpha() for c in w) * 2 >= len(w))
    return alpha * 4 >= len(ws) * 3


def is_prose_field(name, value):
    return bool(PROSE_NAME.search(name)) and is_prose_value(value)


# Tool names that read like actions with side effects (used only to prefer such tools).
SIDE_VERBS = set("""
send post create book reserve order place buy sell pay payment transfer add delete remove cancel
update edit set change register purchase fund follow unfollow retweet comment mention close resolve
mv cp rm rmdir mkdir touch echo lock unlock start fill activate press release schedule invite upload
submit approve deploy restart execute archive publish assign share write save insert replace append
clear modify adjust handover contact todo turn play call enable disable install notify apply rent
enroll move copy rename upgrade invest donate subscribe unsubscribe grant revoke reset make open stop
pause resume hire ride eat control
""".split())
READ_VERBS = set("""
get find search list calculate fetch retrieve lookup look check estimate compute query describe read
view show display count convert predict analyze analyse identify determine recommend
""".split())


def name_tokens(name):
    parts = re.split(r"[._\-\s]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])", name)
    return [p.lower() for p in parts if p and not p.isdigit()]


def side_effect_tool(name):
    toks = name_tokens(name)
    return bool(toks) and toks[0] not in READ_VERBS and any(t in SIDE_VERBS for t in toks)
