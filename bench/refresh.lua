-- wrk script: the refresh grant with rotation. One wrk thread per connection (-t N -c N):
-- each thread chains its own family's rotated refresh token from response to request.
-- Env: TOKENS_FILE (one refresh token per line), BASIC (base64 client_id:secret).
local tokens = {}
local counter = 0

function setup(thread)
  if #tokens == 0 then
    for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
  end
  counter = counter + 1
  thread:set("token", tokens[counter])
  thread:set("basic", os.getenv("BASIC"))
end

bad, missing = 0, 0

function request()
  return wrk.format("POST", "/auth/v2/token", {
    ["Authorization"] = "Basic " .. basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    return
  end
  local rt = body:match('"refresh_token":"([^"]+)"')
  if rt then token = rt else missing = missing + 1 end
end

-- Each thread's counters live in its own Lua state; collect them through the thread objects.
local threads = {}
local setup_orig = setup
function setup(thread)
  setup_orig(thread)
  table.insert(threads, thread)
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
  io.write(string.format("bad=%d missing=%d\n", nbad, nmissing))
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
