-- wrk script: token introspection (RFC 7662), POST /auth/v2/introspect with a confidential
-- client's Basic auth. Each thread cycles through the access tokens of TOKENS_FILE, starting
-- at its own offset. A 200 without "active":true counts as missing.
-- Env: TOKENS_FILE (one access token per line), BASIC (base64 client_id:secret).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")  -- done(), track()
local all = {}

function setup(thread)
  if #all == 0 then
    for line in io.lines(os.getenv("TOKENS_FILE")) do all[#all + 1] = line end
  end
  thread:set("tokens", all)
  thread:set("i", track(thread))
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
