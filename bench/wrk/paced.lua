-- Fixed-rate load for wrk: every connection waits delay() ms before each
-- request (including its first). The driver passes the mean delay in ms as
-- the first script argument (rate ~= connections / (delay + latency)).
-- Delays are uniform in [0.5, 1.5] x mean so the connections do not fire in
-- lock-step bursts; stochastic rounding keeps the mean exact although wrk
-- only takes whole milliseconds.
local mean = 32.0

function init(args)
  if args[1] then mean = tonumber(args[1]) end
  math.randomseed(os.time())
end

function delay()
  local d = mean * (0.5 + math.random())
  local whole = math.floor(d)
  if math.random() < d - whole then whole = whole + 1 end
  return whole
end

-- Share done() with the unpaced runs: load report.lua from this directory.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
