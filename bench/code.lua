-- wrk script: the authorization code exchange (RFC 6749 §4.1.3) with PKCE (RFC 7636).
-- Codes are single-use and live 60 s, so bench/run.py mints them just before the run and
-- every request here consumes a different one: thread k (of WRK_THREADS) takes lines k,
-- k + WRK_THREADS, ... of CODES_FILE. A thread that has used all of its codes stops (wrk's
-- thread:stop()) and counts as exhausted: from then on the run measures fewer connections
-- than asked and wrk's req/s (requests / full duration) is too low, so the runner flags it
-- as a failure; size the seed with run.py --code-rate.
-- A 200 without a refresh_token counts as missing (the codes are for "openid offline").
-- Env: CODES_FILE ("code verifier" per line), REDIRECT_URI (already form-encoded),
--      BASIC (base64 client_id:secret), WRK_THREADS.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")  -- done(), track()
local lines = {}

function setup(thread)
  if #lines == 0 then
    for line in io.lines(os.getenv("CODES_FILE")) do lines[#lines + 1] = line end
  end
  local k, n = track(thread), tonumber(os.getenv("WRK_THREADS"))
  local mine = {}
  for j = k, #lines, n do mine[#mine + 1] = lines[j] end
  thread:set("codes", mine)
  thread:set("basic", os.getenv("BASIC"))
  thread:set("redirect_uri", os.getenv("REDIRECT_URI"))
end

function init(args)
  i = 1
end

function request()
  local line = codes[i] or codes[#codes]
  i = i + 1
  local code, verifier = line:match("^(%S+) (%S+)$")
  return wrk.format("POST", "/auth/v2/token", {
    ["Authorization"] = "Basic " .. basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=authorization_code&code=" .. code .. "&redirect_uri=" .. redirect_uri
     .. "&code_verifier=" .. verifier)
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif not body:find('"refresh_token":"', 1, true) then
    missing = missing + 1
  end
  if i > #codes then
    exhausted = 1
    wrk.thread:stop()
  end
end
