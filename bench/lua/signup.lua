-- POST /auth/register with a new username every time.
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
require "common"
local prefix, n, password = "", 0, ""
setup = number_threads
init = function(args)
  prefix = args[1] .. "t" .. (tid or 0) .. "n"
  password = args[2]
end
request = function()
  n = n + 1
  local body = '{"username":"' .. prefix .. n .. '","password":"' .. password .. '"}'
  return wrk.format("POST", "/auth/register", {["Content-Type"] = "application/json"}, body)
end
done = report
