-- POST /auth/auth with the seeded accounts in turn.
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
require "common"
local users, password, i = {}, "", 0
setup = number_threads
init = function(args)
  users = read_lines(args[1])
  password = args[2]
  i = (tid or 0) * 104729
end
request = function()
  i = i % #users + 1
  local body = '{"username":"' .. users[i] .. '","password":"' .. password .. '"}'
  return wrk.format("POST", "/auth/auth", {["Content-Type"] = "application/json"}, body)
end
done = report
