-- REDIS_STREAM: claim each pending entry of a dead consumer, add its fields to the stream again and
-- ack the old entry; then remove the consumer from the group.
-- KEYS: stream. ARGV: group, dead consumer, this consumer. Returns how many entries were added again.
local returned = 0
while true do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
  if #pending == 0 then break end
  for _, entry in ipairs(pending) do
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, entry[1])
    if claimed[1] and claimed[1][2] then
      redis.call('XADD', KEYS[1], '*', unpack(claimed[1][2]))
      returned = returned + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return returned
