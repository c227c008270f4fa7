"""The Lua scripts of the Redis live state (``store/redis_live.py``), one atomic step each.

Each runs inside Redis, so that what one event changes (the viewer's state, the item's counters,
the top lists, co-engagement, the clock, the fan-out stream) is one round trip and is never seen
half-done by another process. Keys are built from the prefix passed as the first argument: the
deployment runs on one Redis primary (not Redis Cluster, where undeclared keys are refused).

Numbers cross the boundary as strings: Lua holds them as doubles, exact for event times in ms.
"""

from reelrank.store.live import CO_ENGAGEMENT_CAP

# One viewer's events. ARGV: 1 prefix, 2 user, 3 the token of the viewer's state this write was
# folded from ("" when there was none; "-": do not write the viewer), 4 the new token, 5 the
# viewer's state after the events (JSON), 6 stream key ("" none), 7 stream max length, 8 the
# viewer's outbox marks after this write ("" leave them: the stored batches whose part for this
# viewer is folded in, see RedisLiveState.apply_many), then per event: item, creator, ts,
# deltas of im vw lv lk sh ng (lk -1: an unlike, floored at 0), watch-ratio delta, creator
# impressions delta, engagement weight, region ("" none), trending window ms, hour ms, stream
# payload, the number of co-engaged items, and those items.
# Tokens are random, never reused: a write folded from a state another process has replaced
# meanwhile is refused, however many writes came between, and then nothing is changed.
# Returns {applied (0: the viewer changed since it was read), version, clock}.
APPLY = r"""
local function trim_co(key)  -- past twice the cap, keep the cap's strongest neighbours
  local n = redis.call('ZCARD', key)
  if n > 2 * CO_CAP then redis.call('ZREMRANGEBYRANK', key, 0, n - CO_CAP - 1) end
end
local p = ARGV[1]
local uid = ARGV[2]
if ARGV[3] ~= '-' then
  local ukey = p .. 'u:' .. uid
  local current = redis.call('HGET', ukey, 'v') or ''
  if current ~= ARGV[3] then return {0, 0, 0} end
  redis.call('HSET', ukey, 'v', ARGV[4], 's', ARGV[5])
  if ARGV[8] ~= '' then redis.call('HSET', ukey, 'b', ARGV[8]) end
  redis.call('SADD', p .. 'users', uid)
  redis.call('ZREM', p .. 'feedonly', uid)
end
local names = {'im', 'vw', 'lv', 'lk', 'sh', 'ng'}
local clock = tonumber(redis.call('GET', p .. 'clock') or '0')
local version = 0
local a = 9
while a <= #ARGV do
  local item = ARGV[a]
  local ikey = p .. 'i:' .. item
  for k = 1, 6 do
    local d = tonumber(ARGV[a + 2 + k])
    if d < 0 then
      if tonumber(redis.call('HGET', ikey, names[k]) or '0') > 0 then
        redis.call('HINCRBY', ikey, names[k], -1)
      end
    elseif d > 0 then
      redis.call('HINCRBY', ikey, names[k], d)
    end
  end
  if tonumber(ARGV[a + 9]) ~= 0 then redis.call('HINCRBYFLOAT', ikey, 'wr', ARGV[a + 9]) end
  if tonumber(ARGV[a + 10]) > 0 then
    redis.call('HINCRBY', p .. 'ci', ARGV[a + 1], ARGV[a + 10])
  end
  local ts = tonumber(ARGV[a + 2])
  if ts > clock then
    clock = ts
    redis.call('SET', p .. 'clock', ARGV[a + 2])
  end
  version = redis.call('INCR', p .. 'version')
  local w = tonumber(ARGV[a + 11])
  if w > 0 then
    local hour = tonumber(ARGV[a + 14])
    local bucket = math.floor(ts / hour)
    local newest = redis.call('ZREVRANGE', p .. 'tb', 0, 0, 'WITHSCORES')
    -- Late events land in the newest bucket: trending is about recency, not exact hours.
    if #newest > 0 and tonumber(newest[2]) >= bucket then
      bucket = tonumber(newest[2])
    else
      redis.call('ZADD', p .. 'tb', bucket, string.format('%d', bucket))
    end
    redis.call('ZINCRBY', p .. 't:' .. string.format('%d', bucket), w, item)
    -- The running sum over the window's buckets, with the order items entered it (for ties).
    if not redis.call('ZSCORE', p .. 'trend', item) then
      redis.call('HSET', p .. 'first:trend', item, redis.call('INCR', p .. 'seq'))
    end
    redis.call('ZINCRBY', p .. 'trend', w, item)
    redis.call('ZINCRBY', p .. 'pop', w, item)
    if redis.call('HEXISTS', p .. 'first:pop', item) == 0 then
      redis.call('HSET', p .. 'first:pop', item, redis.call('INCR', p .. 'seq'))
    end
    local region = ARGV[a + 12]
    if region ~= '' then
      redis.call('ZINCRBY', p .. 'reg:' .. region, w, item)
      redis.call('SADD', p .. 'regions', region)
      if redis.call('HEXISTS', p .. 'first:reg:' .. region, item) == 0 then
        redis.call('HSET', p .. 'first:reg:' .. region, item, redis.call('INCR', p .. 'seq'))
      end
    end
    local oldest = math.floor((clock - tonumber(ARGV[a + 13])) / hour)
    local bound = '(' .. string.format('%d', oldest)
    local old = redis.call('ZRANGEBYSCORE', p .. 'tb', '-inf', bound)
    for _, b in ipairs(old) do
      local rows = redis.call('ZRANGE', p .. 't:' .. b, 0, -1, 'WITHSCORES')
      for k = 1, #rows, 2 do
        local left = tonumber(redis.call('ZINCRBY', p .. 'trend', -tonumber(rows[k + 1]),
                                         rows[k]))
        if left <= 1e-9 then
          redis.call('ZREM', p .. 'trend', rows[k])
          redis.call('HDEL', p .. 'first:trend', rows[k])
        end
      end
      redis.call('DEL', p .. 't:' .. b)
    end
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', p .. 'tb', '-inf', bound) end
  end
  local nco = tonumber(ARGV[a + 16])
  for k = a + 17, a + 16 + nco do
    redis.call('ZINCRBY', p .. 'co:' .. item, 1, ARGV[k])
    redis.call('ZINCRBY', p .. 'co:' .. ARGV[k], 1, item)
    trim_co(p .. 'co:' .. ARGV[k])
  end
  if nco > 0 then trim_co(p .. 'co:' .. item) end
  if ARGV[6] ~= '' then
    redis.call('XADD', ARGV[6], 'MAXLEN', '~', ARGV[7], '*', 'm', ARGV[a + 15])
  end
  a = a + 17 + nco
end
if version == 0 then version = redis.call('INCR', p .. 'version') end  -- a write without event
return {1, version, string.format('%d', clock)}
""".replace("CO_CAP", str(CO_ENGAGEMENT_CAP))

# ARGV: 1 prefix, 2 user, 3 served memory, 4 max feed-only viewers, 5.. items in order sent.
# What feeds sent, in order, bounded; a viewer with no event joins the feed-only viewers, the
# least recently served of whom go past the bound. Returns how many were evicted.
RECORD_SERVED = r"""
local p = ARGV[1]
local uid = ARGV[2]
local skey = p .. 's:' .. uid
local top = redis.call('ZREVRANGE', skey, 0, 0, 'WITHSCORES')
local n = 0
if #top > 0 then n = tonumber(top[2]) end
for k = 5, #ARGV do
  n = n + 1
  redis.call('ZADD', skey, n, ARGV[k])
end
local size = redis.call('ZCARD', skey)
local keep = tonumber(ARGV[3])
if size > keep then redis.call('ZREMRANGEBYRANK', skey, 0, size - keep - 1) end
local evicted = 0
if redis.call('SISMEMBER', p .. 'users', uid) == 0 then
  redis.call('ZADD', p .. 'feedonly', redis.call('INCR', p .. 'fo:n'), uid)
  local count = redis.call('ZCARD', p .. 'feedonly')
  local limit = tonumber(ARGV[4])
  if count > limit then
    local old = redis.call('ZRANGE', p .. 'feedonly', 0, count - limit - 1)
    for _, o in ipairs(old) do redis.call('DEL', p .. 's:' .. o, p .. 'u:' .. o) end
    redis.call('ZREMRANGEBYRANK', p .. 'feedonly', 0, count - limit - 1)
    redis.call('INCRBY', p .. 'fo:evicted', #old)
    evicted = #old
  end
end
return evicted
"""

# ARGV: 1 prefix, 2 user, 3 user JSON, 4 served items in order (JSON list, "" keeps them),
# 5 a new token. Installs a viewer's state unconditionally (with a new token, so that a
# concurrent read-modify-write of the old state is refused and retries).
PUT_USER = r"""
local p = ARGV[1]
local uid = ARGV[2]
local ukey = p .. 'u:' .. uid
redis.call('HSET', ukey, 'v', ARGV[5], 's', ARGV[3])
redis.call('SADD', p .. 'users', uid)
redis.call('ZREM', p .. 'feedonly', uid)
if ARGV[4] ~= '' then
  local skey = p .. 's:' .. uid
  redis.call('DEL', skey)
  for k, item in ipairs(cjson.decode(ARGV[4])) do redis.call('ZADD', skey, k, item) end
end
return redis.call('INCR', p .. 'version')
"""

# ARGV: 1 prefix, 2 user. Every key of the viewer, and the id in the sets that list viewers.
FORGET_USER = r"""
local p = ARGV[1]
local uid = ARGV[2]
redis.call('DEL', p .. 'u:' .. uid, p .. 's:' .. uid)
redis.call('SREM', p .. 'users', uid)
redis.call('ZREM', p .. 'feedonly', uid)
return redis.call('INCR', p .. 'version')
"""

# ARGV: 1 prefix, 2.. items. Their counters, seven values per item ("" where none), as one JSON
# string: a reply of thousands of small elements costs far more to parse in the client than one.
ITEM_STATS = r"""
local p = ARGV[1]
local out = {}
for k = 2, #ARGV do
  local row = redis.call('HMGET', p .. 'i:' .. ARGV[k], 'im', 'vw', 'lv', 'lk', 'sh', 'ng', 'wr')
  for j = 1, 7 do out[#out + 1] = row[j] or '' end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""

# ARGV: 1 prefix, 2 how many per item, 3.. items. Each item's most co-engaged items with their
# counts (member, count, member, count ...), as one JSON string of lists ({} for an empty one).
CO_ENGAGED = r"""
local p = ARGV[1]
local n = tonumber(ARGV[2]) - 1
local out = {}
for k = 3, #ARGV do
  out[#out + 1] = redis.call('ZREVRANGE', p .. 'co:' .. ARGV[k], 0, n, 'WITHSCORES')
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
