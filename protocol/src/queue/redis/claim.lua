local function seq_of(entry)
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == 'seq' then return tonumber(f[j + 1]) end
  end
  return 0
end
local best, best_seq = nil, nil
for i = 2, #KEYS do
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'last-delivered-id' then last = g[j + 1] end
      end
      if name == 'nodes' and last then
        local e = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
        if #e > 0 and (best_seq == nil or seq_of(e[1]) < best_seq) then
          best, best_seq = i, seq_of(e[1])
        end
      end
    end
  end
end
if best == nil then return nil end
local r = redis.call('XREADGROUP', 'GROUP', 'nodes', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[best], '>')
local entry = r[1][2][1]
local class = ARGV[best + 1]
redis.call('HSET', KEYS[1], class .. '|' .. entry[1], ARGV[1] .. ' ' .. (now_ms() + tonumber(ARGV[2])))
return {class, entry[1], entry[2]}
