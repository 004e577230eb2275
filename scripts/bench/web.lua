-- GET / (the web timeline) signed in: "<id> <session key>" lines from BENCH_USERS_FILE.
local sessions = {}
for line in io.lines(os.getenv("BENCH_USERS_FILE")) do
  sessions[#sessions + 1] = line:match("%d+ (%w+)")
end

function request()
  return wrk.format("GET", "/", {["Cookie"] = "sessionid=" .. sessions[math.random(#sessions)]})
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
