-- REDIS_ACK_ABLE: send the buffered acks and take up to N messages into this consumer's unacked hash.
-- KEYS: queue, unacked hash, inbox, sequence. ARGV: max count, then the numbers to ack.
-- Returns {number before the first taken, {bodies}}.
chunked('HDEL', KEYS[2], ARGV, 2)
local wanted = tonumber(ARGV[1])
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
if #bodies > 0 then redis.call('DEL', KEYS[3]) end
if #bodies < wanted then
  local more = redis.call('RPOP', KEYS[1], wanted - #bodies)
  if more then for _, body in ipairs(more) do bodies[#bodies + 1] = body end end
end
if #bodies == 0 then return {0, {}} end
local first = redis.call('INCRBY', KEYS[4], #bodies) - #bodies
local fields = {}
for i, body in ipairs(bodies) do
  fields[2 * i - 1] = first + i
  fields[2 * i] = body
end
chunked('HSET', KEYS[2], fields, 1)
return {first, bodies}
