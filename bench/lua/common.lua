-- Shared by every scenario: one JSON line with the numbers the bench script reads.
-- `summary.errors.status` counts answers that were not 2xx/3xx.
function report(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end

function read_lines(path)
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  return lines
end

local thread_count = 0
function number_threads(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end
