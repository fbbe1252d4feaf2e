-- REDIS_ACK_ABLE: put every message a consumer holds and has not settled back at the consuming end, oldest
-- nearest it. KEYS: queue, unacked hash, inbox. Returns how many.
-- The hash holds batches ("b<batch>", see redis_ack_take.lua) and their settled tags ("a<batch>"); an
-- earlier version kept one field per message (the tag -> the body), also returned here.
local flat = redis.call('HGETALL', KEYS[2])
local settled, held = {}, {}
for i = 1, #flat, 2 do
  local field = flat[i]
  if string.sub(field, 1, 1) == 'a' then
    for tag in string.gmatch(flat[i + 1], '%d+') do settled[tonumber(tag)] = true end
  end
end
for i = 1, #flat, 2 do
  local field, value = flat[i], flat[i + 1]
  local kind = string.sub(field, 1, 1)
  if kind == 'b' then
    local tag, colon = tonumber(string.sub(field, 2)) * 1048576, string.find(value, ':', 1, true)
    local start = colon + 1
    for length in string.gmatch(string.sub(value, 1, colon - 1), '%d+') do
      local stop = start + tonumber(length)
      if not settled[tag] then held[#held + 1] = {tag, string.sub(value, start, stop - 1)} end
      tag, start = tag + 1, stop
    end
  elseif kind ~= 'a' then
    held[#held + 1] = {tonumber(field), value}
  end
end
table.sort(held, function(a, b) return a[1] > b[1] end)
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
for _, entry in ipairs(held) do bodies[#bodies + 1] = entry[2] end
chunked('RPUSH', KEYS[1], bodies, 1)
redis.call('DEL', KEYS[2], KEYS[3])
return #bodies
