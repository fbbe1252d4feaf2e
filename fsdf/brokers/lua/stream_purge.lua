-- REDIS_STREAM: mark every waiting entry as read, keeping the group's lag exact.
-- KEYS: stream. ARGV: group.
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], '$', 'ENTRIESREAD', info[i + 1])
  end
end
