-- GET a path, each request with the next Authorization value from a file (or none).
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
require "common"
local tokens, path, i = {}, "/", 0
setup = number_threads
init = function(args)
  path = args[1]
  if args[2] then tokens = read_lines(args[2]) end
  i = (tid or 0) * 7919
end
request = function()
  if #tokens == 0 then return wrk.format("GET", path) end
  i = i % #tokens + 1
  return wrk.format("GET", path, {["Authorization"] = tokens[i]})
end
done = report
