-- 90% list, 9% create, 1% revoke (of credentials made by this script's own creates).
local created = {}
local counter = 0
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Server-API-Key"] = os.getenv("BENCH_KEY")
request = function()
  counter = counter + 1
  local roll = math.random(100)
  if roll <= 90 then
    return wrk.format("POST", "/api/v1/credentials/list", nil, "{}")
  elseif roll <= 99 or #created == 0 then
    return wrk.format("POST", "/api/v1/credentials/create", nil, '{"name":"mixed ' .. counter .. '"}')
  else
    local uuid = table.remove(created)
    return wrk.format("POST", "/api/v1/credentials/revoke", nil, '{"uuid":"' .. uuid .. '"}')
  end
end
response = function(status, headers, body)
  local uuid = body:match('"key":"vml_[^"]*"') and body:match('"uuid":"([0-9a-f%-]+)"')
  if uuid then table.insert(created, uuid) end
end
