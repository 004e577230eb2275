-- POST /posts as a random user.
dofile(os.getenv("BENCH_LUA_DIR") .. "/users.lua")

function request()
  local user = pick()
  return wrk.format("POST", "/posts", {
    ["Authorization"] = "Token " .. user.token,
    ["Content-Type"] = "application/json",
  }, '{"content":"benchmark post"}')
end
