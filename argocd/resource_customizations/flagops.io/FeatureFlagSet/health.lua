-- Argo CD health of a flagops FeatureFlagSet, from its conditions.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to reconcile the set"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to observe generation " .. obj.metadata.generation
  return hs
end

local degraded = condition("Degraded")
local ready = condition("Ready")
local progressing = condition("Progressing")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. (degraded.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Applied"
  local held = condition("Overridden")
  if held ~= nil and held.status == "True" then
    hs.message = hs.message .. "; " .. (held.message or "flags held by a rollback")
  end
  return hs
end
hs.status = "Progressing"
if progressing ~= nil and progressing.status == "True" then
  hs.message = progressing.message or "Rolling out"
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
else
  hs.message = "Waiting for flagops to reconcile the set"
end
return hs
