-- GET /auth/smtp as nginx's mail proxy asks it (auth_http), with a live SMTP key every time.
wrk.method = "GET"
wrk.headers["X-Relay-Secret"] = os.getenv("BENCH_RELAY_SECRET")
wrk.headers["Auth-Method"] = "plain"
wrk.headers["Auth-User"] = "bench"
wrk.headers["Auth-Pass"] = os.getenv("BENCH_SMTP_KEY")
wrk.headers["Auth-Protocol"] = "smtp"
wrk.headers["Auth-Login-Attempt"] = "1"
wrk.headers["Client-IP"] = "127.0.0.1"
