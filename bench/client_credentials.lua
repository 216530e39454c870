-- wrk script: the client credentials grant (RFC 6749 §4.4). Every request is the same: Basic
-- auth and grant_type=client_credentials; nothing to chain.
-- Env: BASIC (base64 client_id:secret of a client registered for client_credentials).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")  -- done(), track()

function setup(thread)
  thread:set("basic", os.getenv("BASIC"))
  track(thread)
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
