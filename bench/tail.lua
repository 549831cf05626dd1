-- wrk script used by bench/compare.sh: after the run, print the tail of the
-- latency distribution (p99.9, max) and what share of requests fell in each
-- latency band, so a bimodal tail (some connections starved) shows up.
done = function(summary, latency, requests)
  io.write(string.format("TAIL p99.9 %.3f max %.3f\n",
    latency:percentile(99.9) / 1000, latency.max / 1000))
  local edges = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 }
  local out, prev = "BANDS", 0
  for _, e in ipairs(edges) do
    -- the share of requests faster than e ms: bisect the percentile function
    local lo, hi = 0, 100
    for _ = 1, 24 do
      local m = (lo + hi) / 2
      if latency:percentile(m) < e * 1000 then lo = m else hi = m end
    end
    if lo - prev >= 0.005 then out = out .. string.format(" <%dms:%.2f%%", e, lo - prev) end
    prev = lo
  end
  if 100 - prev >= 0.005 then out = out .. string.format(" >1s:%.2f%%", 100 - prev) end
  io.write(out .. "\n")
end
