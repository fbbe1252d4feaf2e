-- RedisBrpopLpush: put a consumer's processing list back at the consuming end of the queue.
-- KEYS: queue, processing list. Returns how many. The processing list holds the newest on the left,
-- so pushing it from left to right onto the consuming end leaves the oldest nearest that end.
local bodies = redis.call('LRANGE', KEYS[2], 0, -1)
chunked('RPUSH', KEYS[1], bodies, 1)
redis.call('DEL', KEYS[2])
return #bodies
