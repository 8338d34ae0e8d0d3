-- wrk script for bench/gateway.py: POST one fixed predict body with the bench tenant's headers.
--
--   BENCH_BODY      file holding the request body (required)
--   BENCH_API_KEY   X-Api-Key value (sent to every target so that all see the same bytes)
--   BENCH_PURPOSE   X-Purpose value
--   BENCH_LIMIT     optional: stop each thread after this many responses (used with -t1)
--
-- `done` prints one machine-readable line, `BENCH_JSON {...}`, with latencies in microseconds.

local body_path = os.getenv("BENCH_BODY")
local file = assert(io.open(body_path, "rb"), "cannot open BENCH_BODY " .. tostring(body_path))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = os.getenv("BENCH_API_KEY") or ""
wrk.headers["X-Purpose"] = os.getenv("BENCH_PURPOSE") or ""

-- A `response` callback makes wrk hand every response to Lua, which costs client CPU, so it
-- is defined only for the counted runs (the RSS checkpoints), never for throughput runs.
local limit = tonumber(os.getenv("BENCH_LIMIT") or "")
if limit then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == limit then
      -- wrk's main thread sleeps out the whole -d duration even when every thread has
      -- stopped; the marker tells bench/gateway.py to end it early with SIGINT.
      io.write("BENCH_LIMIT_REACHED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency.max, latency.mean))
end
