-- POST /api/v1/credentials/create: each request makes a new credential.
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Server-API-Key"] = os.getenv("BENCH_KEY")
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/credentials/create", nil, '{"name":"bench ' .. counter .. '","type":"API"}')
end
