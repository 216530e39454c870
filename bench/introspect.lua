-- wrk script: token introspection (RFC 7662), POST /auth/v2/introspect with a confidential
-- client's Basic auth. Each thread cycles through the access tokens of TOKENS_FILE, starting
-- at its own offset. A 200 without "active":true counts as missing.
-- Env: TOKENS_FILE (one access token per line), BASIC (base64 client_id:secret).
bad, missing, exhausted = 0, 0, 0
local all = {}
local threads = {}

function setup(thread)
  if #all == 0 then
    for line in io.lines(os.getenv("TOKENS_FILE")) do all[#all + 1] = line end
  end
  table.insert(threads, thread)
  thread:set("tokens", all)
  thread:set("i", #threads)
  thread:set("basic", os.getenv("BASIC"))
end

function request()
  local token = tokens[(i - 1) % #tokens + 1]
  i = i + 1
  return wrk.format("POST", "/auth/v2/introspect", {
    ["Authorization"] = "Basic " .. basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "token=" .. token)
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif not body:find('"active":true', 1, true) then
    missing = missing + 1
  end
end

function done(summary, latency, requests)
  local nbad, nmissing = 0, 0
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    nmissing = nmissing + (t:get("missing") or 0)
  end
  io.write(string.format("requests=%d non2xx=%d errors_connect=%d errors_read=%d timeouts=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.timeout))
  io.write(string.format("bad=%d missing=%d exhausted=0\n", nbad, nmissing))
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
