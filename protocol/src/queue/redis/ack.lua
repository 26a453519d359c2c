local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.match(v, '^(%S+)') ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[2], 'nodes', ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
