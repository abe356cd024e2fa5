//! The Lua scripts that move a shared webhook's entries and spend its budget.
//!
//! Each runs atomically in Redis. All the keys of one shared webhook carry
//! one hash tag (`{namespace:webhook}`), so a script may touch them all on a
//! Redis Cluster too. Every script that moves entries (READ, RECLAIM) or
//! spends budget (CHARGE) first checks the caller's lease (`FENCE`): a sender
//! whose lease expired (paused, partitioned, cut off during a Redis outage)
//! can do neither. Times are Redis's own (`TIME`), never a host's.
//!
//! Replies are arrays whose first element says what happened: `ok`,
//! `fenced`, `wait` (with milliseconds), `refused`.

/// `now` in milliseconds on Redis's clock.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS[1] is the lease, ARGV[1] the caller's lease value (`token:holder`).
const FENCE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
";

/// An agent joins (and says it is alive): KEYS fingerprint, genesis, quiet,
/// stream, agents; ARGV fingerprint, host, quiet_ms, genesis_seen. A
/// different fingerprint is refused. A missing genesis means a new fleet or
/// a Redis that came back empty: no attempt may go for `quiet_ms` (the
/// longest sliding window). Replies `{'ok', genesis, adopt}`: with `adopt`
/// 1 (a genesis made now, or another than the one this agent saw) the agent
/// charges its own recorded attempts again (ADOPT), so the day's budget is
/// not taken as fresh.
pub fn join() -> String {
    format!(
        r"{NOW}
local known = redis.call('GET', KEYS[1])
if known and known ~= ARGV[1] then return {{'refused'}} end
redis.call('SET', KEYS[1], ARGV[1])
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], 'senders', '0', 'MKSTREAM')
local genesis = redis.call('GET', KEYS[2])
local adopt = 0
if not genesis then
  genesis = tostring(now)
  redis.call('SET', KEYS[2], genesis)
  if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[3]) end
  adopt = 1
elseif ARGV[4] ~= '' and ARGV[4] ~= genesis then
  adopt = 1
end
redis.call('ZADD', KEYS[5], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 86400000)
return {{'ok', genesis, adopt}}
"
    )
}

/// KEYS stamps; ARGV host, then attempt times (ms). An agent's own recorded
/// attempts, charged again after the fleet's ledger was lost.
pub const ADOPT: &str = r"
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'NX', ARGV[i], 'local:' .. ARGV[1] .. ':' .. ARGV[i])
end
return {'ok'}
";

/// KEYS stream, ids, genesis; ARGV max_stream_events, then (event id,
/// event JSON) pairs. Adds the events not already there, in order, until the
/// stream holds `max_stream_events`; replies with how many of the pairs it
/// took (added or already there): the caller removes that many from its
/// queue. -1: no genesis (a Redis back empty), the agent must join first.
pub const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local taken = 0
local len = redis.call('XLEN', KEYS[1])
local max = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    if len >= max then return taken end
    local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'event', ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], entry)
    len = len + 1
  end
  taken = taken + 1
end
return taken
";

/// KEYS lease, epoch; ARGV holder, ttl_ms. A free lease is taken with a new
/// fencing token from the epoch: replies `{'ok', token}` or `{'held', value}`.
pub const ACQUIRE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return {'held', held} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return {'ok', token}
";

/// KEYS lease; ARGV lease value, ttl_ms.
pub fn renew() -> String {
    format!(
        r"{FENCE}
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {{'ok'}}
"
    )
}

/// KEYS lease; ARGV lease value. A sender that stops frees its lease.
pub fn release() -> String {
    format!(
        r"{FENCE}
redis.call('DEL', KEYS[1])
return {{'ok'}}
"
    )
}

/// KEYS lease, stream; ARGV lease value, consumer, count. New entries into
/// the holder's pending list (never blocking).
pub fn read() -> String {
    format!(
        r"{FENCE}
local got = redis.call('XREADGROUP', 'GROUP', 'senders', ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if not got then return {{'ok', {{}}}} end
return {{'ok', got[1][2]}}
"
    )
}

/// KEYS lease, stream, open; ARGV lease value, consumer, count, cursor.
/// Takes every pending entry (of any earlier holder) into the caller's
/// pending list, once no open attempt of an earlier holder may still
/// arrive: replies `{'wait', ms}` until then, else `{'ok', cursor,
/// entries}` (cursor `0-0` when done; consumers left with nothing pending
/// are then removed).
pub fn reclaim() -> String {
    format!(
        r"{FENCE}{NOW}
local open = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #open > 0 then return {{'wait', tonumber(open[2]) - now}} end
local got = redis.call('XAUTOCLAIM', KEYS[2], 'senders', ARGV[2], 0, ARGV[4], 'COUNT', ARGV[3])
if got[1] == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], 'senders')) do
    local name, pending
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= ARGV[2] and pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[2], 'senders', name)
    end
  end
end
return {{'ok', got[1], got[2]}}
"
    )
}

/// KEYS lease, stamps, open, retry, quiet, attempts, genesis; ARGV lease value (`''`
/// for a manual send, which moves no entry), request_timeout_ms, skew_ms,
/// window count, then per window: count, period_ms, held_ms, calendar (1/0).
///
/// Charges one attempt if every window has room for it, with a pessimistic
/// stamp `now + request_timeout` (the latest it can arrive), recorded as open
/// until then: `{'ok', attempt, now}`. Else `{'wait', ms}`, charging nothing;
/// `{'genesis'}` when the fleet's keys are gone (a Redis back empty).
/// A sliding window counts the stamps in `(now - held, +inf)`; a calendar
/// window (whole UTC days) needs room in every period that
/// `[now - skew, stamp + skew]` touches.
pub fn charge() -> String {
    format!(
        r"if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {{'fenced'}} end
if redis.call('EXISTS', KEYS[7]) == 0 then return {{'genesis'}} end
{NOW}
local wait = math.max(redis.call('PTTL', KEYS[4]), redis.call('PTTL', KEYS[5]), 0)
if wait > 0 then return {{'wait', wait}} end
local timeout = tonumber(ARGV[2])
local skew = tonumber(ARGV[3])
local stamp = now + timeout
local memory = 0
for i = 0, tonumber(ARGV[4]) - 1 do
  local count = tonumber(ARGV[5 + 4 * i])
  local period = tonumber(ARGV[6 + 4 * i])
  local held = tonumber(ARGV[7 + 4 * i])
  if ARGV[8 + 4 * i] == '1' then
    for p = math.floor((now - skew) / period), math.floor((stamp + skew) / period) do
      local used = redis.call('ZCOUNT', KEYS[2], p * period, '(' .. ((p + 1) * period))
      if used >= count then wait = math.max(wait, (p + 1) * period + skew - now) end
    end
    memory = math.max(memory, 2 * period + skew)
  else
    local used = redis.call('ZCOUNT', KEYS[2], '(' .. (now - held), '+inf')
    if used >= count then
      local leaving = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. (now - held), '+inf', 'WITHSCORES', 'LIMIT', used - count, 1)
      wait = math.max(wait, tonumber(leaving[2]) + held - now)
    end
    memory = math.max(memory, held)
  end
end
if wait > 0 then return {{'wait', wait}} end
local attempt = redis.call('INCR', KEYS[6])
redis.call('ZADD', KEYS[2], stamp, attempt)
redis.call('ZADD', KEYS[3], stamp, attempt)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - memory))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
return {{'ok', attempt, now}}
"
    )
}

/// KEYS stamps, open, retry; ARGV attempt, retry_after_ms. The attempt was
/// answered (or timed out): it counts from now if that is before its
/// pessimistic stamp, is no longer open, and a `Retry-After` pauses every
/// sender of the webhook.
pub fn settle() -> String {
    format!(
        r"{NOW}
local stamp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if stamp and tonumber(stamp) > now then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
local after = tonumber(ARGV[2])
if after > 0 and redis.call('PTTL', KEYS[3]) < after then
  redis.call('SET', KEYS[3], '1', 'PX', after)
end
return {{'ok'}}
"
    )
}

/// KEYS stream, ids; ARGV n, then n entry ids, then their event ids.
/// Delivered (or dead-lettered) entries leave the stream and the dedupe index.
pub const ACK: &str = r"
local n = tonumber(ARGV[1])
local entries = {}
for i = 2, n + 1 do entries[#entries + 1] = ARGV[i] end
if n > 0 then
  redis.call('XACK', KEYS[1], 'senders', unpack(entries))
  redis.call('XDEL', KEYS[1], unpack(entries))
end
for i = n + 2, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
return {'ok'}
";

/// KEYS stamps; ARGV memory_ms. `{now, stamp, stamp, ...}`: the attempts
/// that may still count somewhere, for pacing and `status`.
pub fn ledger() -> String {
    format!(
        r"{NOW}
local got = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf', 'WITHSCORES')
local stamps = {{now}}
for i = 2, #got, 2 do stamps[#stamps + 1] = tonumber(got[i]) end
return stamps
"
    )
}

/// KEYS agents; ARGV host. The agent is alive; agents gone for a day are forgotten.
pub fn seen() -> String {
    format!(
        r"{NOW}
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return {{'ok'}}
"
    )
}

/// KEYS lease, stream, agents; ARGV seen_within_ms. `{lease or '', stream
/// length, agent, agent, ...}` for `status`.
pub fn overview() -> String {
    format!(
        r"{NOW}
local out = {{redis.call('GET', KEYS[1]) or '', redis.call('XLEN', KEYS[2])}}
for _, host in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now - tonumber(ARGV[1]), '+inf')) do
  out[#out + 1] = host
end
return out
"
    )
}
