-- settle(hash, spec): mark messages of this consumer's taken batches settled (acked, requeued or dead-lettered).
-- spec: entries separated by spaces, one per batch: "<batch>" when the whole batch is settled (its two fields
-- go), or "<batch>:<tag>,<tag>..." to add those tags to the batch's settled list "a<batch>", which exists
-- exactly as long as the batch does: a late partial entry for a batch already gone changes nothing. An entry
-- repeated is harmless.
local function settle(hash, spec)
  for batch, tags in string.gmatch(spec, '(%d+):?([%d,]*)') do
    if tags == '' then
      redis.call('HDEL', hash, 'b' .. batch, 'a' .. batch)
    else
      local settled = redis.call('HGET', hash, 'a' .. batch)
      if settled then redis.call('HSET', hash, 'a' .. batch, settled == '' and tags or (settled .. ',' .. tags)) end
    end
  end
end
