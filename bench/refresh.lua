-- wrk script: the refresh grant with rotation. One wrk thread per connection (-t N -c N):
-- each thread chains its own family's rotated refresh token from response to request.
-- Env: TOKENS_FILE (one refresh token per line), BASIC (base64 client_id:secret).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")  -- done(), track()
local tokens = {}

function setup(thread)
  if #tokens == 0 then
    for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
  end
  thread:set("token", tokens[track(thread)])
  thread:set("basic", os.getenv("BASIC"))
end

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
