-- wrk script: POST an Alertmanager webhook ("version": "4") of 10 firing alerts with FRESH
-- fingerprints and labels on every request (thread id x per-thread counter x alert index, under
-- a run tag), so that nothing is ever a duplicate and each alert is routed, rendered and stored.
--
--   wrk -t2 -c32 -d10s -s bench/webhook.lua http://127.0.0.1:PORT/webhook/alertmanager -- TAG
--
-- TAG: up to 4 hex digits, distinct per run (it leads every fingerprint). `done` prints one
-- line "JSON {...}" with the counts and latency percentiles (microseconds) for bench/run.py.

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

local tag = 0
local n = 0
local thread_id = 0
local ALERTS = 10
local head = '{"version":"4","groupKey":"{}:{alertname=\\"DiskFull\\"}","truncatedAlerts":0,' ..
  '"status":"firing","receiver":"sms","groupLabels":{"alertname":"DiskFull"},' ..
  '"commonLabels":{"alertname":"DiskFull","severity":"critical","team":"db"},' ..
  '"commonAnnotations":{},"externalURL":"http://alertmanager:9093","alerts":['
local alert_fmt = '{"status":"firing","labels":{"alertname":"DiskFull","severity":"critical",' ..
  '"team":"db","instance":"%s","job":"node"},"annotations":{"summary":"disk /var 97%% full on %s",' ..
  '"description":"bench alert"},"startsAt":"2026-01-01T00:00:00.123456789Z",' ..
  '"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=up",' ..
  '"fingerprint":"%s"}'

function init(args)
  tag = tonumber(args[1] or "0", 16) or 0
  thread_id = tonumber(rawget(_G, "tid")) or 0  -- set by setup() through thread:set
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local parts = {}
  for i = 1, ALERTS do
    local fp = string.format("%04x%02x%08x%02x", tag % 65536, thread_id % 256, n, i)
    local inst = string.format("db-%x-%d-%d-%d:9100", tag, thread_id, n, i)
    parts[i] = string.format(alert_fmt, inst, inst, fp)
  end
  local body = head .. table.concat(parts, ",") .. "]}"
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
