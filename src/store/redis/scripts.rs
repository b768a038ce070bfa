//! The Lua scripts: each touches the keys of one slot only (a scope's, or a tenant's for the
//! quota scripts), so each is one atomic step on a standalone server and on a cluster alike.
//! `RESERVE` is the reservation: it inserts a call only if the scope's version is still the
//! one the check read; `QUOTA_TAKE` comes before it and counts the call against its tenant's
//! quota (given back by `QUOTA_GIVE` if the reservation does not happen, and by the sweep).

use redis::Script;

/// Inserts a record and its index entries; with a non-empty `seen`, only if the scope's
/// version equals it. Returns the new version, or -1 (nothing written) on a conflict. A
/// record with an embedding is also added to the scope's vector ids and its vector log.
///
/// The resource entry (the state the newest call on a resource left) is written in the same
/// step and kept until the last record on the resource expires.
///
/// KEYS: version, record, vector, candidate view, candidate set, by-exact, by-key, resource
/// (these two written only when ARGV says so), vector log, vector ids.
/// ARGV: seen ("" for unconditional), id, record bytes, vector ("" for none), candidate view,
/// created ms, TTL ms, "1" to write by-key, resource state JSON ("" for none), vector log
/// length, writer (the instance's id, logged with the vector).
const RESERVE: &str = r"
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local ttl = tonumber(ARGV[7])
local cur = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and (cur or '0') ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl)
  redis.call('ZADD', KEYS[10], 0, ARGV[2])
  extend(KEYS[10], ttl)
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[10], '*', 'a', ARGV[2], 'w', ARGV[11])
  extend(KEYS[9], ttl)
end
redis.call('SET', KEYS[4], ARGV[5], 'PX', ttl)
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
extend(KEYS[5], ttl)
redis.call('SET', KEYS[6], ARGV[2], 'PX', ttl)
if ARGV[8] == '1' then redis.call('SET', KEYS[7], ARGV[2], 'PX', ttl) end
if ARGV[9] ~= '' then
  local left = redis.call('PTTL', KEYS[8])
  redis.call('SET', KEYS[8], ARGV[9], 'PX', math.max(ttl, left))
end
if not cur then
  -- A scope seen for the first time (or again after all its records expired) starts from
  -- the server's clock in microseconds, so a version can never come back to one a check
  -- read earlier.
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
local v = redis.call('INCR', KEYS[1])
extend(KEYS[1], ttl)
return v
";

/// Stores an embedding with the record's expiry `t` (ms, or -1 for none), adds the id to the
/// scope's vector ids and logs it with its writer (`a id w writer`: readers of the log that
/// predate the writer field see `a id`). Shared by `UPDATE` and `PUT_EMBEDDING`.
const STORE_VECTOR: &str = r"
local function store_vector(vkey, vlog, vids, vector, t, maxlen, id, writer)
  if t > 0 then redis.call('SET', vkey, vector, 'PX', t) else redis.call('SET', vkey, vector) end
  redis.call('ZADD', vids, 0, id)
  redis.call('XADD', vlog, 'MAXLEN', '~', maxlen, '*', 'a', id, 'w', writer)
  for _, k in ipairs({vids, vlog}) do
    if t > 0 and redis.call('PTTL', k) < t then redis.call('PEXPIRE', k, t) end
  end
end
";

/// Replaces a record (keeping its expiry) and, when given and new, its embedding (logged
/// only then: a Complete does not log the vector again). 0 if it is gone.
///
/// KEYS: record, vector, vector log, vector ids. ARGV: record bytes, vector ("" to keep the
/// stored one), vector log length, id, writer.
const UPDATE: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t == -2 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  store_vector(KEYS[2], KEYS[3], KEYS[4], ARGV[2], t, ARGV[3], ARGV[4], ARGV[5])
end
return 1
";

/// Stores an embedding of an existing record, with the record's expiry. 0 if it is gone.
///
/// KEYS: record, vector, vector log, vector ids. ARGV: vector, vector log length, id, writer.
const PUT_EMBEDDING: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t == -2 then return 0 end
store_vector(KEYS[2], KEYS[3], KEYS[4], ARGV[1], t, ARGV[2], ARGV[3], ARGV[4])
return 1
";

/// The newest candidates created at or after `since`: a flat array of id, view pairs.
///
/// KEYS: candidate set. ARGV: since ms, limit, the scope's key base.
const CANDIDATES: &str = r"
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local c = redis.call('GET', ARGV[3] .. 'cd:' .. id)
  if c then
    out[#out + 1] = id
    out[#out + 1] = c
  end
end
return out
";

/// The record an index entry (by key or by exact hash) points to, with its candidate view
/// (where its free text is): `{}` or `{record, view}` (view false if missing).
///
/// KEYS: index entry. ARGV: the scope's key base.
const LATEST: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return {} end
local r = redis.call('GET', ARGV[1] .. 'r:' .. id)
if not r then return {} end
return {r, redis.call('GET', ARGV[1] .. 'cd:' .. id)}
";

/// Deletes an expired record and the index entries that still name it; logs the removal of
/// its embedding (in a log that still exists).
///
/// KEYS: record, vector, candidate view, candidate set, by-exact, vector log, vector ids[,
/// by-key]. ARGV: id, vector log length.
const FORGET: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end
if redis.call('ZREM', KEYS[7], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[6], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
end
if KEYS[8] and redis.call('GET', KEYS[8]) == ARGV[1] then redis.call('DEL', KEYS[8]) end
return 1
";

/// Counts a new record against its tenant's quota, or refuses it. First gives back the
/// share of up to 64 records that expired more than the grace ago and were never swept (a
/// reservation cut off between this script and its sweep entry), so such a leak heals.
/// Returns `{0, 0}` when counted, `{1, records}` or `{2, sessions}` when a quota refuses.
///
/// KEYS: held, held per session. ARGV: member (`session SEP id`), session, expiry ms,
/// max records ("" for none), max sessions ("" for none), prune below ms.
const QUOTA_TAKE: &str = r"
local sep = string.char(31)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[6], 'LIMIT', 0, 64)) do
  redis.call('ZREM', KEYS[1], m)
  local s = string.sub(m, 1, string.find(m, sep, 1, true) - 1)
  if redis.call('HINCRBY', KEYS[2], s, -1) <= 0 then redis.call('HDEL', KEYS[2], s) end
end
local records = redis.call('ZCARD', KEYS[1])
if ARGV[4] ~= '' and records >= tonumber(ARGV[4]) then return {1, records} end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held == 0 and ARGV[5] ~= '' then
  local sessions = redis.call('HLEN', KEYS[2])
  if sessions >= tonumber(ARGV[5]) then return {2, sessions} end
end
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
return {0, 0}
";

/// Gives back records' shares of their tenant's counts (each once: a member already gone is
/// not counted again). KEYS: held, held per session. ARGV: member, session, member, session...
const QUOTA_GIVE: &str = r"
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    local s = ARGV[i + 1]
    if redis.call('HINCRBY', KEYS[2], s, -1) <= 0 then redis.call('HDEL', KEYS[2], s) end
  end
end
return 1
";

/// A stream's `XINFO STREAM` fields by name (`length`, `entries-added`, `last-generated-id`),
/// or nil when it does not exist.
const STREAM_INFO: &str = r"
local function stream_info(key)
  if redis.call('EXISTS', key) == 0 then return nil end
  local info = redis.call('XINFO', 'STREAM', key)
  local m = {}
  for i = 1, #info, 2 do m[info[i]] = info[i + 1] end
  return m
end
";

/// The vector log after a cursor (`id`, entries added up to it): `{'gap'}` when entries past
/// it were trimmed (more entries were removed than the cursor had read) or the log was lost,
/// else `{'ok', next id, next added, op, id, writer, ...}` (writer "" for an entry without
/// one: a removal, or an addition logged by an older version). Entries only ever leave from
/// the head.
///
/// KEYS: vector log. ARGV: cursor id, cursor's entries added, limit.
const VECTOR_LOG: &str = r"
local m = stream_info(KEYS[1])
if not m then
  if ARGV[2] == '0' then return {'ok', ARGV[1], '0'} end
  return {'gap'}
end
local read, added = tonumber(ARGV[2]), tonumber(m['entries-added'])
if added < read or added - tonumber(m['length']) > read then return {'gap'} end
local rows = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[3])
local out = {'ok', ARGV[1], tostring(read + #rows)}
for _, row in ipairs(rows) do
  out[2] = row[1]
  out[#out + 1] = row[2][1]
  out[#out + 1] = row[2][2]
  out[#out + 1] = row[2][4] or ''
end
return out
";

/// A page of the scope's stored vectors by id after `after` ("" for the first page, which
/// starts with the log's head: last id and entries added; else two empty strings), then the
/// last id read and the number read, then id, vector pairs.
///
/// KEYS: vector ids, vector log. ARGV: the scope's key base, after, limit.
const SCOPE_VECTORS: &str = r"
local out = {'', ''}
if ARGV[2] == '' then
  local m = stream_info(KEYS[2])
  if m then
    out = {m['last-generated-id'], tostring(m['entries-added'])}
  else
    out = {'0-0', '0'}
  end
end
local lower = '-'
if ARGV[2] ~= '' then lower = '(' .. ARGV[2] end
local ids = redis.call('ZRANGE', KEYS[1], lower, '+', 'BYLEX', 'LIMIT', 0, ARGV[3])
out[3] = ids[#ids] or ''
out[4] = tostring(#ids)
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. 'v:' .. id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  end
end
return out
";

/// The values of keys of one scope read at one instant (false where none is stored): vector
/// keys, or a record with its vector and candidate view.
///
/// KEYS: keys of one scope.
const VECTORS_OF: &str = r"
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('GET', k) end
return out
";

/// The scripts, loaded by hash (re-sent when a restarted server lost its script cache).
pub(super) struct Scripts {
    pub(super) reserve: Script,
    pub(super) update: Script,
    pub(super) put_embedding: Script,
    pub(super) candidates: Script,
    pub(super) latest: Script,
    pub(super) forget: Script,
    pub(super) quota_take: Script,
    pub(super) quota_give: Script,
    pub(super) vector_log: Script,
    pub(super) scope_vectors: Script,
    pub(super) vectors_of: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            reserve: Script::new(RESERVE),
            update: Script::new(&format!("{STORE_VECTOR}{UPDATE}")),
            put_embedding: Script::new(&format!("{STORE_VECTOR}{PUT_EMBEDDING}")),
            candidates: Script::new(CANDIDATES),
            latest: Script::new(LATEST),
            forget: Script::new(FORGET),
            quota_take: Script::new(QUOTA_TAKE),
            quota_give: Script::new(QUOTA_GIVE),
            vector_log: Script::new(&format!("{STREAM_INFO}{VECTOR_LOG}")),
            scope_vectors: Script::new(&format!("{STREAM_INFO}{SCOPE_VECTORS}")),
            vectors_of: Script::new(VECTORS_OF),
        }
    }
}
