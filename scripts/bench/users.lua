-- Shared by the wrk scripts: "<id> <token>" lines from BENCH_USERS_FILE, one picked per request.
local users = {}
for line in io.lines(os.getenv("BENCH_USERS_FILE")) do
  local id, token = line:match("(%d+) (%x+)")
  users[#users + 1] = {id = id, token = token}
end

function pick()
  return users[math.random(#users)]
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
