-- REDIS_ACK_ABLE: settle what the spec names, then take up to N messages into this consumer's unacked hash.
-- KEYS: queue, unacked hash, inbox, sequence. ARGV: max count, the settle spec (settle.lua).
-- The taken messages are one batch, numbered by the sequence, kept as one field "b<batch>" holding
-- "<lengths joined by commas>:<bodies joined>"; message i of the batch (from 0) has the tag
-- batch * 2^20 + i. A field per batch, not per message, halves what a take costs Redis (issue 19).
-- Its settled list "a<batch>" starts empty with it: a hash holding batches then always has two fields
-- or more, on which an earlier fsdf's recovery script fails before it writes anything (it sorts fields
-- as numbers), so a consumer of an earlier version never returns a batch as one message.
-- Returns {batch, the bodies' lengths joined by commas, the bodies joined by the byte 0xFF}: three values
-- however many messages, because redis-py parses each element of a reply in Python (about 2 us a message).
-- 0xFF never occurs in UTF-8 text, so the client cuts the bodies apart in one C call; the lengths still
-- cut them when a body holds that byte itself (one not UTF-8, which the client then dead-letters).
if ARGV[2] ~= '' then settle(KEYS[2], ARGV[2]) end
local wanted = math.min(tonumber(ARGV[1]), 1048576)
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
if #bodies > 0 then redis.call('DEL', KEYS[3]) end
if #bodies < wanted then
  local more = redis.call('RPOP', KEYS[1], wanted - #bodies)
  if more then for _, body in ipairs(more) do bodies[#bodies + 1] = body end end
end
if #bodies == 0 then return {0, '', ''} end
local lengths = {}
for i, body in ipairs(bodies) do lengths[i] = #body end
local batch = redis.call('INCR', KEYS[4])
local joined_lengths, joined = table.concat(lengths, ','), table.concat(bodies)
redis.call('HSET', KEYS[2], 'b' .. batch, joined_lengths .. ':' .. joined, 'a' .. batch, '')
return {batch, joined_lengths, table.concat(bodies, '\255')}
