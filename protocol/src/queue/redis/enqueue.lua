redis.pcall('XGROUP', 'CREATE', KEYS[1], 'nodes', '0', 'MKSTREAM')
redis.call('SADD', KEYS[2], ARGV[1])
local seq = redis.call('INCR', KEYS[4])
local id = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'attempt', ARGV[3], 'job', ARGV[4], 'seq', seq)
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return id
