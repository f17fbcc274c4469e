-- wrk: durable creates of 1 KiB ConfigMaps through the Kubernetes API (skiff), each request a
-- new name (SKIFF_PREFIX, the thread number and a counter), with the bearer token from the
-- environment, into the namespace SKIFF_NS (default: default).
local counter = 0

function init(args)
  token = os.getenv("SKIFF_TOKEN")
  ns = os.getenv("SKIFF_NS") or "default"
  prefix = os.getenv("SKIFF_PREFIX") or "cm"
  value = string.rep("x", 1024)
end

function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d-%d", prefix, os.time(), id, counter)
  local body = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"' .. name ..
    '"},"data":{"v":"' .. value .. '"}}'
  return wrk.format("POST", "/api/v1/namespaces/" .. ns .. "/configmaps", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
