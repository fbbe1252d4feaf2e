-- RedisBrpopLpush: send the buffered acks and move up to N messages into this consumer's processing list.
-- KEYS: queue, processing list. ARGV: max count, then the bodies to ack. Returns the bodies taken.
for i = 2, #ARGV do redis.call('LREM', KEYS[2], -1, ARGV[i]) end
local wanted = tonumber(ARGV[1])
if wanted < 1 then return {} end
local bodies = redis.call('RPOP', KEYS[1], wanted)
if not bodies then return {} end
chunked('LPUSH', KEYS[2], bodies, 1)
return bodies
