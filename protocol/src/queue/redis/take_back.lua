local now = now_ms()
local max_attempts = tonumber(ARGV[2])
local class = ARGV[3]
local function take(id, consumer, reason, count)
  local token = class .. '|' .. id
  local e = redis.call('XRANGE', KEYS[2], id, id)
  redis.call('XACK', KEYS[2], 'nodes', id)
  redis.call('XDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[1], token)
  if #e == 0 then return end
  local f = {}
  local fields = e[1][2]
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  local attempt = tonumber(f['attempt'])
  local kind
  if count and attempt >= max_attempts then
    reason = reason .. '; attempt ' .. attempt .. ' of ' .. max_attempts .. ' - moved to the dead-letter queue'
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'id', f['id'], 'attempt', attempt, 'job', f['job'], 'reason', reason)
    kind = {type = 'dead_lettered', reason = reason}
  else
    redis.call('XADD', KEYS[2], '*', 'id', f['id'], 'attempt', attempt + 1, 'job', f['job'],
      'seq', redis.call('INCR', KEYS[6]))
    redis.call('LPUSH', KEYS[5], '1')
    redis.call('LTRIM', KEYS[5], 0, 63)
    kind = {type = 'requeued', next_attempt = attempt + 1, reason = reason}
  end
  local ev = {job_id = f['id'], attempt = attempt, node_id = consumer, at_ms = now, kind = kind}
  redis.call('XADD', KEYS[3], '*', 'event', cjson.encode(ev))
end
if ARGV[1] == 'release' then
  local token = class .. '|' .. ARGV[5]
  local v = redis.call('HGET', KEYS[1], token)
  if not v or string.match(v, '^(%S+)') ~= ARGV[4] then return -1 end
  take(ARGV[5], ARGV[4], ARGV[6], false)
  return 1
end
local grace = tonumber(ARGV[4])
local pending = redis.pcall('XPENDING', KEYS[2], 'nodes', '-', '+', 1000)
if type(pending) ~= 'table' or pending.err then return 0 end
local n = 0
for _, p in ipairs(pending) do
  local id, consumer, idle = p[1], p[2], tonumber(p[3])
  local v = redis.call('HGET', KEYS[1], class .. '|' .. id)
  local expired
  if v then
    expired = tonumber(string.match(v, ' (%d+)$')) <= now
  else
    expired = idle > grace
  end
  if expired then
    take(id, consumer, 'node ' .. consumer .. ' stopped heartbeating', true)
    n = n + 1
  end
end
return n
