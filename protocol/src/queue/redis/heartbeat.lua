local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.match(v, '^(%S+)') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now_ms() + tonumber(ARGV[3])))
return 1
