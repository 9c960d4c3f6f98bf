-- measure.lua: the wrk script of the benchmark suite. Optional method, body and per-request path,
-- optional counting of one response header, and one JSON line of results at the end.
--
-- Environment:
--   BENCH_METHOD        HTTP method (default GET)
--   BENCH_BODY          request body
--   BENCH_PATH          a path with "{n}", replaced by a counter per request (cold keys)
--   BENCH_SEQ_START     first counter value (default 0)
--   BENCH_COUNT_HEADER  a response header (lower case) whose values are counted

local method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")
local path_pattern = os.getenv("BENCH_PATH")
local count_header = os.getenv("BENCH_COUNT_HEADER")

if method then wrk.method = method end
if body then wrk.body = body end

local threads = {}
local next_thread_id = 0

function setup(thread)
   thread:set("thread_id", next_thread_id)
   next_thread_id = next_thread_id + 1
   table.insert(threads, thread)
end

-- Only defined when needed: a request() or response() function makes wrk do
-- Lua work per request, which costs client CPU.
if path_pattern then
   local counter = nil
   function request()
      if counter == nil then
         -- each thread counts in its own range, so no two requests share a key
         counter = tonumber(os.getenv("BENCH_SEQ_START") or "0") + thread_id * 100000000
      end
      counter = counter + 1
      local path = path_pattern:gsub("{n}", tostring(counter))
      return wrk.format(nil, path)
   end
end

if count_header then
   counts = {}
   function response(status, headers, body)
      local value = headers[count_header] or "(none)"
      counts[value] = (counts[value] or 0) + 1
   end
end

local function json_string(s)
   return '"' .. tostring(s):gsub('[%c"\\]', "") .. '"'
end

function done(summary, latency, requests)
   local merged = {}
   for _, thread in ipairs(threads) do
      local thread_counts = thread:get("counts")
      if thread_counts then
         for value, n in pairs(thread_counts) do
            merged[value] = (merged[value] or 0) + n
         end
      end
   end
   local parts = {}
   for value, n in pairs(merged) do
      table.insert(parts, json_string(value) .. ":" .. n)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d},' ..
      '"header_counts":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max,
      table.concat(parts, ",")))
end
