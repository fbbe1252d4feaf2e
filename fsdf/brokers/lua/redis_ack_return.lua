-- REDIS_ACK_ABLE: put everything a consumer holds back at the consuming end, oldest nearest it.
-- KEYS: queue, unacked hash, inbox. Returns how many.
local flat = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #flat, 2 do held[#held + 1] = {tonumber(flat[i]), flat[i + 1]} end
table.sort(held, function(a, b) return a[1] > b[1] end)
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
for _, entry in ipairs(held) do bodies[#bodies + 1] = entry[2] end
chunked('RPUSH', KEYS[1], bodies, 1)
redis.call('DEL', KEYS[2], KEYS[3])
return #bodies
