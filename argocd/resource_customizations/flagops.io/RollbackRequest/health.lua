-- Argo CD health of a flagops RollbackRequest, from its phase: every phase has a health.
local hs = {}

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to pick the request up"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to observe generation " .. obj.metadata.generation
  return hs
end

local phase = obj.status.phase
local message = obj.status.message or ""
if phase == "Succeeded" or phase == "Planned" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Aborted" then
  hs.status = "Degraded"
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = phase .. ": " .. message
return hs
