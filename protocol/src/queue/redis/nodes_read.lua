local now = now_ms()
local out = {}
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  local id, at = seen[i], tonumber(seen[i + 1])
  local age = now - at
  if age > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  else
    local json = redis.call('HGET', KEYS[1], id)
    if json then
      table.insert(out, id); table.insert(out, json); table.insert(out, tostring(age))
    end
  end
end
return out
