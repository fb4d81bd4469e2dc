-- A well-formed key that was never issued: authentication fails on every request.
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Server-API-Key"] = os.getenv("BENCH_UNKNOWN_KEY")
