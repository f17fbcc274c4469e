-- wrk: durable puts of the same 1 KiB values into etcd (its v3 JSON gateway, keys and values
-- base64), each request a new key.
local counter = 0

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

function init(args)
    -- The same bytes a 1 KiB ConfigMap is stored as.
  value = b64('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"v":"' ..
    string.rep("x", 1024) .. '"}}')
end

function request()
  counter = counter + 1
  local key = b64(string.format("/registry/configmaps/default/cm-%d-%d-%d", os.time(), id, counter))
  return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" },
    '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
