-- Move due delayed messages into the queue. The broker prepends push_one(key, body), which queues
-- one body the way its kind does (LPUSH onto a list, XADD to a stream).
-- KEYS: delayed zset, queue. ARGV: now, how many at most. Returns the next due time, or nil.
-- A member is "<unique prefix>:<body>", so equal bodies delayed alike stay separate messages.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  push_one(KEYS[2], string.sub(member, string.find(member, ':', 1, true) + 1))
end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return next_due[2]
