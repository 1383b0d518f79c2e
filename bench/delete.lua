-- wrk script: every request DELETEs a distinct generated token (load<N>) with Basic auth.
-- Arguments after "--": first token index, path prefix, Authorization header value.
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  next_index = tonumber(args[1]) + thread_index * 100000000
  prefix = args[2]
  headers = { Authorization = args[3] }
end

function request()
  next_index = next_index + 1
  return wrk.format("DELETE", prefix .. next_index, headers)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(99)))
end
