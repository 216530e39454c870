-- Shared by the wrk scripts of bench/: each thread's counters (globals of its own Lua state:
-- bad = a status other than 200, missing = a 200 without the expected field, exhausted = a
-- connection that ran out of inputs), summed over the threads in done() and printed with
-- wrk's own figures in the form bench/run.py parses. A script loads it first with
--   dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
-- and registers each thread in setup() with track(thread).
bad, missing, exhausted = 0, 0, 0
local threads = {}

function track(thread)
  table.insert(threads, thread)
  return #threads
end

function done(summary, latency, requests)
  local nbad, nmissing, nexhausted = 0, 0, 0
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    nmissing = nmissing + (t:get("missing") or 0)
    nexhausted = nexhausted + (t:get("exhausted") or 0)
  end
  io.write(string.format("requests=%d non2xx=%d errors_connect=%d errors_read=%d timeouts=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.timeout))
  io.write(string.format("bad=%d missing=%d exhausted=%d\n", nbad, nmissing, nexhausted))
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
