-- POST /auth/token/refresh: each thread keeps a pool of refresh tokens and puts back
-- the new one from every answer (rotation makes each token single-use).
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
require "common"
local pool, last = {}, nil
setup = number_threads
init = function(args)
  local all = read_lines(args[1])
  local threads = tonumber(args[2])
  for k, token in ipairs(all) do
    if (k - 1) % threads == (tid or 0) then pool[#pool + 1] = token end
  end
end
request = function()
  local token = table.remove(pool, 1) or last
  last = token
  return wrk.format("POST", "/auth/token/refresh", {["Content-Type"] = "application/json"},
    '{"refresh_token":"' .. token .. '"}')
end
response = function(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then pool[#pool + 1] = token end
end
done = report
