import { MAX_EPOCHS } from './engine.js';
import { luaScript } from './redis-link.js';

/**
 * Server-side steps of the Redis engine. Each runs atomically in Redis, so
 * offset assignment, append, retention and the live notification are one
 * step: live order equals log order. All keys of one script share the
 * topic's hash tag, so they also run unchanged on Redis Cluster.
 *
 * A topic's log is a stream whose entry ids are `<offset>-0`; its meta hash
 * holds epoch, first and last. Live notifications go to a sharded channel as
 * `[offset, ts, epoch, key, data]`.
 */

/**
 * Epochs and the two fences that open them. A topic's meta hash holds its
 * current epoch and, in `epochs`, the history as JSON [[epoch, start], ...],
 * at most MAX_EPOCHS long (the oldest are dropped). Opening an epoch at
 * last + 1 says: offsets from here on may hold other messages than any
 * earlier epoch had there, so whoever saw them in that epoch lost them.
 *
 * The failover fence. `replid` in the meta hash is the replication id of
 * the primary that last wrote the topic (Redis INFO replication,
 * master_replid). A promoted replica gets a new replication id and keeps the
 * old one as master_replid2; its copy may lack the newest writes of the old
 * primary, which some node may have acknowledged or delivered. So the first
 * script that touches a topic on a primary with another replication id
 * opens a new epoch there if that primary was promoted (master_replid2 set),
 * and records its id. A primary that restarted from its own disk also has a
 * new id (Redis 7.0 does not keep it across restarts) but was not promoted:
 * its data is what its persistence kept. When that may lack acknowledged
 * writes (no AOF with appendfsync always: the node says so with
 * `restartsLose`), a restart opens a new epoch too, since the nodes that saw
 * the lost writes may have restarted as well and remember nothing; with
 * appendfsync always a restart keeps the epoch.
 *
 * The node fence. A node passes the epoch and last offset it acknowledged
 * or delivered of the topic; a log of that epoch that is behind it lost
 * messages (a restart that lost the AOF tail): open a new epoch.
 *
 * Scripts replicate their effects, so reading INFO (not deterministic) is
 * allowed; the reply is read once per script, never kept across scripts.
 */
const FENCE_LIB = `
local function openEpoch(meta, newEpoch)
  local m = redis.call('HMGET', meta, 'epoch', 'last', 'epochs')
  local history = cjson.decode(m[3] or cjson.encode({{m[1], 1}}))
  history[#history + 1] = {newEpoch, tonumber(m[2]) + 1}
  while #history > ${MAX_EPOCHS} do table.remove(history, 1) end
  redis.call('HSET', meta, 'epoch', newEpoch, 'epochs', cjson.encode(history))
end

local replication
local function replid()
  replication = replication or redis.call('INFO', 'replication')
  local at = string.find(replication, 'master_replid:', 1, true)
  return string.sub(replication, at + 14, at + 53)
end
local function promoted()
  local at = string.find(replication, 'master_replid2:', 1, true)
  return string.find(string.sub(replication, at + 15, at + 54), '[^0]') ~= nil
end

local function fenceFailover(meta, newEpoch, restartsLose)
  local m = redis.call('HMGET', meta, 'epoch', 'replid')
  if not m[1] then return end
  local id = replid()
  if m[2] == id then return end
  if promoted() or restartsLose == '1' then openEpoch(meta, newEpoch) end
  redis.call('HSET', meta, 'replid', id)
end

local function fenceSeen(meta, seenEpoch, seenLast, newEpoch)
  if seenEpoch == '' then return end
  local m = redis.call('HMGET', meta, 'epoch', 'last')
  if m[1] ~= seenEpoch or tonumber(m[2]) >= tonumber(seenLast) then return end
  openEpoch(meta, newEpoch)
end

local function createTopic(meta, epoch, now)
  redis.call('HSET', meta, 'epoch', epoch, 'first', 1, 'last', 0, 'createdAt', now, 'replid', replid())
end
`;

/** Appends one message; shared by publish and dead-lettering, which fence the log first. */
const APPEND = `
local function append(meta, log, channel, json, now, key, maxMessages, newEpoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = newEpoch
    createTopic(meta, epoch, now)
  end
  local offset = redis.call('HINCRBY', meta, 'last', 1)
  redis.call('XADD', log, offset .. '-0', 'd', json, 't', now, 'k', key)
  local first = tonumber(redis.call('HGET', meta, 'first'))
  if offset - first + 1 > maxMessages then
    first = offset - maxMessages + 1
    redis.call('XTRIM', log, 'MINID', first .. '-0')
    redis.call('HSET', meta, 'first', first)
  end
  redis.call('SPUBLISH', channel, '[' .. offset .. ',' .. now .. ',' .. cjson.encode(epoch) .. ',' .. cjson.encode(key) .. ',' .. json .. ']')
  return {offset, epoch}
end
`;

/**
 * KEYS: meta, log, dedupe key. ARGV: json, now, key ('' for none), dedupe
 * window ms, max messages, new epoch, channel, epoch and last offset this
 * node saw (fencing; '' and 0 for none), '1' when a restart may lose writes.
 * Returns {'ok'|'dup', offset, epoch, ts}.
 */
export const PUBLISH = luaScript(`${FENCE_LIB}${APPEND}
fenceFailover(KEYS[1], ARGV[6], ARGV[10])
fenceSeen(KEYS[1], ARGV[8], ARGV[9], ARGV[6])
if ARGV[3] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    return {'dup', tonumber(string.sub(seen, 1, sep - 1)), redis.call('HGET', KEYS[1], 'epoch') or '', tonumber(string.sub(seen, sep + 1))}
  end
end
local r = append(KEYS[1], KEYS[2], ARGV[7], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[5]), ARGV[6])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], r[1] .. ':' .. ARGV[2], 'PX', ARGV[4])
end
return {'ok', r[1], r[2], tonumber(ARGV[2])}
`);

/**
 * A topic's state, never creating it. KEYS: meta. ARGV: new epoch, epoch
 * and last offset this node saw (fencing; '' and 0 for none), '1' when a
 * restart may lose writes.
 * Returns {epoch, first, last, epochs JSON or false}, or false when the
 * topic does not exist.
 */
export const TOPIC_STATE = luaScript(`${FENCE_LIB}
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then return false end
fenceFailover(KEYS[1], ARGV[1], ARGV[4])
fenceSeen(KEYS[1], ARGV[2], ARGV[3], ARGV[1])
return redis.call('HMGET', KEYS[1], 'epoch', 'first', 'last', 'epochs')
`);

/**
 * Adds a topic to the registry unless that would pass the topic limit.
 * KEYS: registry set. ARGV: topic, limit (-1 for none), '1' when the limit
 * applies (not for the broker's own dead-letter topics).
 * Returns 1 when added, 0 when it was there.
 */
export const REGISTER_TOPIC = luaScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local max = tonumber(ARGV[2])
if ARGV[3] == '1' and max >= 0 then
  local count = redis.call('SCARD', KEYS[1])
  if count >= max then
    return redis.error_reply('MESHMQ_LIMIT the cluster holds ' .. count .. ' topics, its limit (--max-topics); topic ' .. ARGV[1] .. ' was not created')
  end
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
`);

/**
 * Removes messages from the front of a log. KEYS: meta, log.
 * ARGV: 'before', offset | 'retention', cutoff ts, max messages.
 * Returns how many were removed.
 */
export const TRIM = luaScript(`
local m = redis.call('HMGET', KEYS[1], 'first', 'last')
if not m[1] then return 0 end
local first, last = tonumber(m[1]), tonumber(m[2])
local newFirst = first
if ARGV[1] == 'before' then
  newFirst = math.max(first, math.min(tonumber(ARGV[2]), last + 1))
else
  local cutoff = tonumber(ARGV[2])
  newFirst = math.max(first, last - tonumber(ARGV[3]) + 1)
  local scanned = 0
  local done = false
  while not done and scanned < 10000 and newFirst <= last do
    local entries = redis.call('XRANGE', KEYS[2], newFirst .. '-0', '+', 'COUNT', 100)
    if #entries == 0 then break end
    for _, e in ipairs(entries) do
      local fields = e[2]
      local ts
      for i = 1, #fields, 2 do
        if fields[i] == 't' then ts = tonumber(fields[i + 1]) end
      end
      if ts and ts < cutoff then
        newFirst = tonumber(string.sub(e[1], 1, -3)) + 1
      else
        done = true
        break
      end
    end
    scanned = scanned + #entries
  end
end
if newFirst <= first then return 0 end
redis.call('XTRIM', KEYS[2], 'MINID', newFirst .. '-0')
redis.call('HSET', KEYS[1], 'first', newFirst)
return newFirst - first
`);

/**
 * Creates a group (and its topic) if missing; an existing group keeps its
 * settings. KEYS: meta, log, group hash. ARGV: group, startAt ('' = after
 * last), ackWaitMs (''), maxDeliveries (''), now, new epoch, default
 * ackWait, default maxDeliveries. Returns the group hash fields.
 */
export const ENSURE_GROUP = luaScript(`${FENCE_LIB}
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  createTopic(KEYS[1], ARGV[6], ARGV[5])
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  local m = redis.call('HMGET', KEYS[1], 'first', 'last')
  local first, last = tonumber(m[1]), tonumber(m[2])
  local start = last + 1
  if ARGV[2] ~= '' then start = tonumber(ARGV[2]) end
  if start < first then start = first end
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[1], (start - 1) .. '-0', 'MKSTREAM')
  if not ok then
    redis.call('XGROUP', 'SETID', KEYS[2], ARGV[1], (start - 1) .. '-0')
  end
  redis.call('HSET', KEYS[3],
    'ackWaitMs', ARGV[3] ~= '' and ARGV[3] or ARGV[7],
    'maxDeliveries', ARGV[4] ~= '' and ARGV[4] or ARGV[8],
    'createdAt', ARGV[5], 'redeliveries', 0, 'deadLettered', 0)
end
return redis.call('HMGET', KEYS[3], 'ackWaitMs', 'maxDeliveries', 'createdAt', 'redeliveries', 'deadLettered')
`);

/**
 * Changes an existing group's settings. KEYS: group hash. ARGV: group,
 * topic, ackWaitMs (''), maxDeliveries ('').
 */
export const CONFIGURE_GROUP = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('MESHMQ_NOT_FOUND group ' .. ARGV[1] .. ' of topic ' .. ARGV[2] .. ' does not exist')
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ackWaitMs', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'maxDeliveries', ARGV[4]) end
return 1
`);

/**
 * Leases up to max messages to a consumer: due pending entries first (lease
 * ended, nack delay passed, or released), then new ones (XREADGROUP). An
 * entry due again after maxDeliveries moves to the dead-letter log.
 * Lease deadlines are explicit (`d:<id>` in the leases hash) rather than
 * Redis idle times, so nack delays and releases are exact.
 *
 * KEYS: log, meta, group hash, leases hash, dlq meta, dlq log.
 * ARGV: group, consumer, max, now, scan limit, dlq new epoch, dlq max
 * messages, dlq channel, topic, '1' when a restart may lose writes.
 * Returns {{{id, fields, delivery, deadline}...}, nextDueAt or -1, the topic's epoch, dead-lettered count}.
 */
export const CLAIM = luaScript(`${FENCE_LIB}${APPEND}
local settings = redis.call('HMGET', KEYS[3], 'ackWaitMs', 'maxDeliveries')
if not settings[1] then
  return redis.error_reply('MESHMQ_NOT_FOUND group ' .. ARGV[1] .. ' of topic ' .. ARGV[9] .. ' does not exist')
end
local ackWait, maxDeliveries = tonumber(settings[1]), tonumber(settings[2])
local max, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local deadLettered = 0
local nextDue = -1
local function later(t)
  if nextDue < 0 or t < nextDue then nextDue = t end
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[5]))
for _, p in ipairs(pending) do
  local id, idle, count = p[1], p[3], p[4]
  local due = tonumber(redis.call('HGET', KEYS[4], 'd:' .. id) or (now - idle + ackWait))
  if due > now then
    later(due)
  elseif #out < max then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    if #entry == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('HDEL', KEYS[4], 'd:' .. id, 'f:' .. id)
    elseif count >= maxDeliveries then
      local fields = entry[1][2]
      local f = {}
      for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
      local firstAt = redis.call('HGET', KEYS[4], 'f:' .. id) or tostring(now - idle)
      local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
      local letter = '{"topic":' .. cjson.encode(ARGV[9]) .. ',"group":' .. cjson.encode(ARGV[1]) ..
        ',"offset":' .. string.sub(id, 1, -3) .. ',"epoch":' .. cjson.encode(epoch) .. ',"ts":' .. f['t']
      if f['k'] and f['k'] ~= '' then letter = letter .. ',"key":' .. cjson.encode(f['k']) end
      letter = letter .. ',"data":' .. f['d'] .. ',"deliveries":' .. count .. ',"firstDeliveredAt":' .. firstAt ..
        ',"lastDeliveredAt":' .. (now - idle) .. ',"reason":"max_deliveries","deadLetteredAt":' .. now .. '}'
      fenceFailover(KEYS[5], ARGV[6], ARGV[10])
      append(KEYS[5], KEYS[6], ARGV[8], letter, ARGV[4], '', tonumber(ARGV[7]), ARGV[6])
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('HDEL', KEYS[4], 'd:' .. id, 'f:' .. id)
      redis.call('HINCRBY', KEYS[3], 'deadLettered', 1)
      deadLettered = deadLettered + 1
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
      local deadline = now + ackWait
      redis.call('HSET', KEYS[4], 'd:' .. id, deadline)
      redis.call('HINCRBY', KEYS[3], 'redeliveries', 1)
      out[#out + 1] = {id, entry[1][2], count + 1, deadline}
      later(deadline)
    end
  end
end
if #out < max then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', max - #out, 'STREAMS', KEYS[1], '>')
  if fresh then
    for _, e in ipairs(fresh[1][2]) do
      local deadline = now + ackWait
      redis.call('HSET', KEYS[4], 'd:' .. e[1], deadline, 'f:' .. e[1], now)
      out[#out + 1] = {e[1], e[2], 1, deadline}
      later(deadline)
    end
  end
end
return {out, nextDue, redis.call('HGET', KEYS[2], 'epoch') or '', deadLettered}
`);

/**
 * Refuses an ack or nack that names an epoch whose message at that offset
 * was lost (another message holds the offset now).
 */
const EPOCH_HOLDS_LIB = `
local function epochHolds(meta, epoch, offset)
  if epoch == '' then return true end
  local m = redis.call('HMGET', meta, 'epoch', 'epochs')
  if m[1] == epoch then return true end
  if not m[2] then return false end
  local history = cjson.decode(m[2])
  for i, e in ipairs(history) do
    if e[1] == epoch then
      local nextEpoch = history[i + 1]
      return nextEpoch == nil or offset < nextEpoch[2]
    end
  end
  return false
end
`;

/**
 * Checks that a delivery may be settled by a consumer: its epoch still
 * holds the offset, it is pending, and it is leased to that consumer.
 * Returns an error reply, or nil when it may.
 */
const LEASED_LIB = `${EPOCH_HOLDS_LIB}
local function refuseSettle(log, meta, group, id, topic, consumer, epoch)
  local offset = string.sub(id, 1, -3)
  if not epochHolds(meta, epoch, tonumber(offset)) then
    return redis.error_reply('MESHMQ_NOT_FOUND offset ' .. offset .. ' of epoch ' .. epoch .. ' was lost; another message holds it now')
  end
  local ok, p = pcall(redis.call, 'XPENDING', log, group, id, id, 1)
  if not ok or #p == 0 then
    return redis.error_reply('MESHMQ_NOT_FOUND offset ' .. offset .. ' is not pending in group ' .. group .. ' of topic ' .. topic)
  end
  if p[1][2] ~= consumer then
    return redis.error_reply('MESHMQ_NOT_FOUND offset ' .. offset .. ' of group ' .. group .. ' of topic ' .. topic .. ' is not leased to this member (its lease ended)')
  end
  return nil
end
`;

/** KEYS: log, leases, meta. ARGV: group, id, topic, epoch ('' for any), consumer. */
export const ACK = luaScript(`${LEASED_LIB}
local refused = refuseSettle(KEYS[1], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[4])
if refused then return refused end
redis.call('HDEL', KEYS[2], 'd:' .. ARGV[2], 'f:' .. ARGV[2])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
`);

/** KEYS: log, leases, meta. ARGV: group, id, due at, topic, live channel, epoch ('' for any), consumer. */
export const NACK = luaScript(`${LEASED_LIB}
local refused = refuseSettle(KEYS[1], KEYS[3], ARGV[1], ARGV[2], ARGV[4], ARGV[7], ARGV[6])
if refused then return refused end
redis.call('XCLAIM', KEYS[1], ARGV[1], '_released', 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[2], 'd:' .. ARGV[2], ARGV[3])
redis.call('SPUBLISH', ARGV[5], '{"wake":' .. cjson.encode(ARGV[1]) .. '}')
return 1
`);

/**
 * Hands every lease of the consumers whose name starts with ARGV[2] back to
 * the group, due at once, and wakes the group's members on every node.
 * KEYS: log, leases. ARGV: group, consumer name or prefix, now,
 * 'exact'|'prefix', live channel. Returns how many leases.
 */
export const RELEASE = luaScript(`
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local released = 0
for _, c in ipairs(consumers) do
  local name
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] end
  end
  local match = (ARGV[4] == 'exact' and name == ARGV[2]) or (ARGV[4] == 'prefix' and string.sub(name, 1, #ARGV[2]) == ARGV[2])
  if match and name ~= '_released' then
    local entries = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100000, name)
    for _, e in ipairs(entries) do
      redis.call('XCLAIM', KEYS[1], ARGV[1], '_released', 0, e[1], 'JUSTID')
      redis.call('HSET', KEYS[2], 'd:' .. e[1], ARGV[3])
    end
    released = released + #entries
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
  end
end
if released > 0 then
  redis.call('SPUBLISH', ARGV[5], '{"wake":' .. cjson.encode(ARGV[1]) .. '}')
end
return released
`);

/**
 * KEYS: log, group hash, leases. ARGV: group, pending limit.
 * Returns {settings..., pending count, last delivered id, {{id, consumer, idle, count, due, firstAt}...}} or nil.
 */
export const GROUP_STATE = luaScript(`
local s = redis.call('HMGET', KEYS[2], 'ackWaitMs', 'maxDeliveries', 'createdAt', 'redeliveries', 'deadLettered')
if not s[1] then return false end
local pendingCount, lastId = 0, '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local name, pend, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'pending' then pend = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == ARGV[1] then pendingCount, lastId = pend, last end
  end
end
local entries = {}
local limit = tonumber(ARGV[2])
if limit > 0 and pendingCount > 0 then
  for _, e in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', limit)) do
    local lease = redis.call('HMGET', KEYS[3], 'd:' .. e[1], 'f:' .. e[1])
    entries[#entries + 1] = {e[1], e[2], e[3], e[4], lease[1] or '', lease[2] or ''}
  end
end
return {s[1], s[2], s[3], s[4], s[5], pendingCount, lastId, entries}
`);
