-- wrk script: the client credentials grant (RFC 6749 §4.4). Every request is the same: Basic
-- auth and grant_type=client_credentials; nothing to chain.
-- Env: BASIC (base64 client_id:secret of a client registered for client_credentials).
bad, missing, exhausted = 0, 0, 0
local threads = {}

function setup(thread)
  thread:set("basic", os.getenv("BASIC"))
  table.insert(threads, thread)
end

function init(args)
  req = wrk.format("POST", "/auth/v2/token", {
    ["Authorization"] = "Basic " .. basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=client_credentials")
end

function request()
  return req
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif not body:find('"access_token":"', 1, true) then
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
