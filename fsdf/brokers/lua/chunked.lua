-- chunked(command, key, values, from): redis.call(command, key, values[from], ...) 1000 values at a
-- time, because Lua's unpack() holds about 8000 values (LUAI_MAXCSTACK). Prepended to the scripts
-- that pass many values to one command.
local function chunked(command, key, values, from)
  for i = from, #values, 1000 do
    redis.call(command, key, unpack(values, i, math.min(i + 999, #values)))
  end
end
