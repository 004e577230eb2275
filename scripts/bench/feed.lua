-- GET /feeds/{id} as that user; BENCH_FEED_QUERY is appended (e.g. "?limit=19" to skip the cache).
dofile(os.getenv("BENCH_LUA_DIR") .. "/users.lua")
local query = os.getenv("BENCH_FEED_QUERY") or ""

function request()
  local user = pick()
  return wrk.format("GET", "/feeds/" .. user.id .. query, {["Authorization"] = "Token " .. user.token})
end
