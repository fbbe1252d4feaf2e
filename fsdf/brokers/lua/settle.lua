-- settle(hash, spec): mark messages of this consumer's taken batches settled (acked, requeued or dead-lettered).
-- spec: entries separated by spaces, one per batch: "<batch>" when the whole batch is settled (its two fields
-- go), or "<batch>:<tag>,<tag>..." to add those tags to the batch's settled list. A batch already gone is left
-- alone, so a late partial entry cannot leave a settled list behind. An entry repeated is harmless.
local function settle(hash, spec)
  for batch, tags in string.gmatch(spec, '(%d+):?([%d,]*)') do
    if tags == '' then
      redis.call('HDEL', hash, 'b' .. batch, 'a' .. batch)
    elseif redis.call('HEXISTS', hash, 'b' .. batch) == 1 then
      local settled = redis.call('HGET', hash, 'a' .. batch)
      redis.call('HSET', hash, 'a' .. batch, settled and (settled .. ',' .. tags) or tags)
    end
  end
end
