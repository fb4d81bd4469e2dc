-- POST /api/v1/credentials/list with the key in BENCH_KEY.
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Server-API-Key"] = os.getenv("BENCH_KEY")
