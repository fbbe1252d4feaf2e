-- REDIS_ACK_ABLE: send the buffered acks and take up to N messages into this consumer's unacked hash.
-- KEYS: queue, unacked hash, inbox, sequence. ARGV: max count, the numbers to ack joined by spaces.
-- Returns {number before the first taken, the bodies' lengths joined by commas, the bodies joined}:
-- three values however many messages, because redis-py parses each element of a reply in Python
-- (about 2 us a message; the caller cuts the joined bodies apart in a fraction of that).
if ARGV[2] ~= '' then
  local acks = {}
  for tag in string.gmatch(ARGV[2], '%d+') do acks[#acks + 1] = tag end
  chunked('HDEL', KEYS[2], acks, 1)
end
local wanted = tonumber(ARGV[1])
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
if #bodies > 0 then redis.call('DEL', KEYS[3]) end
if #bodies < wanted then
  local more = redis.call('RPOP', KEYS[1], wanted - #bodies)
  if more then for _, body in ipairs(more) do bodies[#bodies + 1] = body end end
end
if #bodies == 0 then return {0, '', ''} end
local first = redis.call('INCRBY', KEYS[4], #bodies) - #bodies
local fields, lengths = {}, {}
for i, body in ipairs(bodies) do
  fields[2 * i - 1] = first + i
  fields[2 * i] = body
  lengths[i] = #body
end
chunked('HSET', KEYS[2], fields, 1)
return {first, table.concat(lengths, ','), table.concat(bodies)}
