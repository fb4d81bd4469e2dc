-- 90% list (BENCH_KEY's server: 10 credentials), 9% create and 1% revoke (on BENCH_WRITE_KEY's
-- server, revoking credentials this script created, so the listed server keeps its size).
local created = {}
local counter = 0
local list_key = os.getenv("BENCH_KEY")
local write_key = os.getenv("BENCH_WRITE_KEY")
local function post(path, key, body)
  return wrk.format("POST", path, { ["Content-Type"] = "application/json", ["X-Server-API-Key"] = key }, body)
end
request = function()
  counter = counter + 1
  local roll = math.random(100)
  if roll <= 90 then
    return post("/api/v1/credentials/list", list_key, "{}")
  elseif roll <= 99 or #created == 0 then
    return post("/api/v1/credentials/create", write_key, '{"name":"mixed ' .. counter .. '"}')
  else
    return post("/api/v1/credentials/revoke", write_key, '{"uuid":"' .. table.remove(created) .. '"}')
  end
end
response = function(status, headers, body)
  if string.find(body, '"key":"vml_', 1, true) then
    local uuid = string.match(body, '"uuid":"([0-9a-f%-]+)"')
    if uuid then table.insert(created, uuid) end
  end
end
