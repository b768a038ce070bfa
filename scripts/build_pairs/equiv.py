"""When are two argument values the same thing, and when surely not?

BFCL's possible answers list every value the annotators accept for a parameter. That is
leniency for grading, not equivalence: for ambiguous requests they accept e.g. "Microsoft" or
"Apple", "fahrenheit" or "celsius". So an accepted alternative becomes a *duplicate* pair only
when it also passes a conservative check here: the same calendar date, the same text up to
punctuation, a place name with only a state/country qualifier added, or a pair listed in
ALIAS_GROUPS (reviewed by hand from the BFCL alternatives). And a replacement value counts as
a *different* action only when nothing here relates it to the original.
"""

import datetime as _dt
import re

from text import norm_str

# Equivalent surface forms, reviewed by hand from BFCL-accepted alternatives. Matching is
# case-insensitive and used only for pairs BFCL itself accepted for the same call.
ALIAS_GROUPS = [
    ["New York City", "NYC", "New York City, NY", "New York, NY", "NY, NY", "New York, New York", "NY, New York"],
    ["New York, USA", "New York City, USA", "NYC, USA", "NY, USA"],
    ["San Francisco", "SF"],
    ["San Francisco, CA", "SF, CA", "San Francisco, California", "SF, California", "San Francisco,CA"],
    ["Los Angeles", "L.A."],
    ["Los Angeles, CA", "LA, CA", "Los Angeles, California"],
    ["Los Angeles, USA", "LA, USA"],
    ["Washington D.C.", "Washington DC", "DC", "D.C."],
    ["USA", "United States", "US", "United States of America", "U.S.", "U.S"],
    ["UK", "United Kingdom"],
    ["USD", "US Dollar", "US Dollars", "US dollars", "United States Dollar", "Dollar", "dollars"],
    ["EUR", "Euro", "Euros", "euro"],
    ["GBP", "British Pounds", "Pounds Sterling"],
    ["JPY", "Japanese Yen"],
    ["CAD", "Canadian dollars"],
    ["NBA", "National Basketball Association"],
    ["MLB", "Major League Baseball"],
    ["EPL", "English Premier League", "Premier League"],
    ["UEFA Champions League", "Champions League"],
    ["Los Angeles Lakers", "LA Lakers", "L.A Lakers", "Lakers", "LAL"],
    ["Manchester United", "Man United", "Man Utd", "Man U", "MUFC"],
    ["Liverpool Football Club", "Liverpool F.C.", "Liverpool", "LFC"],
    ["Golden State Warriors", "GSW"],
    ["New York Yankees", "NY Yankees"],
    ["Barcelona", "FC Barcelona"],
    ["Metropolitan Museum of Art", "The Metropolitan Museum of Art", "The Met", "Met Museum", "Metropolitan Museum"],
    ["Museum of Modern Art", "MOMA"],
    ["Louvre", "Louvre Museum", "the Louvre museum"],
    ["Pacific Gas and Electric", "PG&E"],
    ["World War 2", "WW2"],
    ["Lionel Messi", "Messi"],
    ["Ji Sung Park", "Park Ji Sung"],
    ["Apple Inc", "Apple Inc.", "Apple"],
    ["Tesla Inc.", "Tesla"],
    ["Delta Airlines", "Delta"],
    ["McDonald's", "McDonalds", "McDonald", "mc donalds"],
    ["Sheraton Hotel", "Hotel Sheraton"],
    ["Yellowstone", "Yellowstone National Park"],
    ["Treaty of Lisbon", "Signing of the Treaty of Lisbon", "The signing of the Treaty of Lisbon"],
    ["signing of the Magna Carta", "Magna Carta"],
    ["Law of Universal Gravitation", "Universal Law of Gravitation", "The law of universal gravitation"],
    ["Criminal Law Amendment Act", "Criminal Law Amendment"],
    ["New York Supreme Court", "NY Supreme Court"],
    ["Los Angeles Superior Court", "LA Superior Court"],
    ["Golden Gate Bridge in San Francisco", "Golden Gate Bridge, San Francisco", "Golden Gate Bridge"],
    ["Manhattan, New York City", "Manhattan, New York", "Manhattan, NY", "Manhattan, NYC", "Manhattan"],
    ["123 Main Street, New York", "123 Main St., NY"],
    ["a pair of sneakers", "pair of sneakers", "sneakers", "sneaker"],
    ["cm", "centimeter", "centimeters"],
    ["km", "kilometer", "kilometers"],
    ["m", "meter", "meters"],
    ["mi", "mile", "miles"],
    ["in", "inch", "inches"],
    ["ft", "feet"],
    ["kg", "kilograms"],
    ["g", "gram", "grams"],
    ["ml", "milliliters"],
    ["oz", "ounce", "ounces"],
    ["lb", "lbs", "pound"],
    ["tbsp", "tablespoon", "tablespoons"],
    ["tsp", "teaspoon"],
    ["c", "cup", "cups"],
    ["kg/m³", "kilograms per cubic meter"],
    ["g/cm³", "grams per cubic centimeter"],
    ["g/mol", "grams/mole"],
    ["m^2", "square meters", "sq m", "sq. meters"],
    ["ft^2", "square feet"],
    ["in^2", "square inches"],
    ["24h", "24 hour"],
    ["desc", "descending"],
    ["XL", "Extra Large"],
    ["round-trip", "round trip"],
    ["C#", "C sharp"],
    ["English", "EN", "en"],
    ["Spanish", "ES"],
    ["French", "FR"],
    ["artificial intelligence", "ai"],
    ["gas", "gasoline"],
    ["12pm", "12:00"],
    ["history of kites and how they're made", "history of kites and how they are made"],
    ["when is shishir's birthday", "when's shishir's birthday"],
    ["Find a recent news article about corona virus", "recent news article about corona virus"],
    ["LangFuse and its application in generative AI projects",
     "Find information on LangFuse and its application in generative AI projects"],
    ["weather in India", "current weather in India", "What's the current weather in India",
     "What's the current weather in India?"],
    ["open on Sundays", "opens on Sundays"],
    ["Shishir Patil's birthday", "Shishir Patil birthday"],
    ["Shishir Birthday", "Shishir's Birthday"],
]
_ALIAS = {}
for _i, _g in enumerate(ALIAS_GROUPS):
    for _s in _g:
        _ALIAS.setdefault(_s.casefold(), set()).add(_i)

US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts",
    "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico",
    "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont",
    "VA": "Virginia", "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}
COUNTRIES = {
    "usa", "us", "united states", "u.s.", "uk", "united kingdom", "england", "france", "italy",
    "portugal", "spain", "germany", "canada", "mexico", "china", "japan", "india", "australia",
    "brazil", "vietnam", "thailand", "netherlands", "ireland", "greece", "egypt", "kenya",
}
REGIONS = {s.casefold() for s in US_STATES} | {s.casefold() for s in US_STATES.values()} | COUNTRIES

MONTHS = {m.lower(): i for i, m in enumerate(
    ["January", "February", "March", "April", "May", "June", "July", "August", "September",
     "October", "November", "December"], 1)}
MONTHS.update({k[:3]: v for k, v in list(MONTHS.items())})
MONTHS["sept"] = 9


def parse_date(s):
    """A calendar date from an unambiguous date string, else None."""
    s = norm_str(s)
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", s)
    if m:
        return _mk(int(m[1]), int(m[2]), int(m[3]))
    m = re.fullmatch(r"(\d{1,2})[/-](\d{1,2})[/-](\d{4})", s)
    if m:
        a, b, y = int(m[1]), int(m[2]), int(m[3])
        if a > 12 >= b:
            return _mk(y, b, a)
        if b > 12 >= a:
            return _mk(y, a, b)
        if a == b:
            return _mk(y, a, b)
        return None
    m = re.fullmatch(r"([A-Za-z]+)\.?\s*(\d{1,2})(?:st|nd|rd|th)?,?\s*(\d{4})", s)
    if m and m[1].lower() in MONTHS:
        return _mk(int(m[3]), MONTHS[m[1].lower()], int(m[2]))
    m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\.?,?\s*(\d{4})", s)
    if m and m[2].lower() in MONTHS:
        return _mk(int(m[3]), MONTHS[m[2].lower()], int(m[1]))
    return None


def _mk(y, m, d):
    try:
        return _dt.date(y, m, d)
    except ValueError:
        return None


def _alnum(s):
    return re.sub(r"[\W_]+", "", s.casefold())


def _segments(s):
    return [p.strip().casefold() for p in norm_str(s).split(",") if p.strip()]


def place_extension(a, b):
    """"Boston" vs "Boston, MA": same first part, the rest only state/country qualifiers."""
    x, y = _segments(a), _segments(b)
    if len(x) == len(y) or not x or not y or x[0] != y[0]:
        return False
    longer = x if len(x) > len(y) else y
    shorter = y if longer is x else x
    if longer[:len(shorter)] != shorter:
        return False
    return all(p in REGIONS for p in longer[len(shorter):])


def equivalent_reason(a, b):
    """Why two strings name the same thing (used only on BFCL-accepted alternatives), or None."""
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    da, db = parse_date(a), parse_date(b)
    if da is not None and da == db:
        return "same date"
    risky = any(c in a + b for c in "\"'\\`")
    if not risky and len(_alnum(a)) >= 3 and _alnum(a) == _alnum(b) and norm_str(a).casefold() != norm_str(b).casefold():
        return "punctuation/spacing"
    if place_extension(a, b):
        return "place qualifier"
    ga, gb = _ALIAS.get(norm_str(a).casefold()), _ALIAS.get(norm_str(b).casefold())
    if ga and gb and ga & gb:
        return "alias (reviewed)"
    return None


class Relatedness:
    """Is a replacement value possibly the same thing as the original? (Then it is not used.)"""

    def __init__(self, calls):
        self.parent = {}
        for c in calls:
            for p, others in c.alts.items():
                v = c.args.get(p)
                if not isinstance(v, str):
                    continue
                for o in others:
                    if isinstance(o, str):
                        self._union(_alnum(v), _alnum(o))

    def _find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def _union(self, a, b):
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def related(self, a, b):
        from text import same_folded
        if same_folded(a, b):
            return True
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return float(a) == float(b)
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        if equivalent_reason(a, b):
            return True
        fa, fb = norm_str(a).casefold(), norm_str(b).casefold()
        if fa in fb or fb in fa:
            return True
        if _segments(a)[:1] == _segments(b)[:1]:
            return True
        ka, kb = _alnum(a), _alnum(b)
        if not ka or not kb or ka == kb:
            return True
        if ka in self.parent and kb in self.parent and self._find(ka) == self._find(kb):
            return True
        return False
