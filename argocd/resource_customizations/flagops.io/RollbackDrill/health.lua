-- Argo CD health of a flagops RollbackDrill: its schedule, and how its last drill went.
local hs = {}
local status = obj.status
if status == nil or status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to schedule the drill"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for flagops to observe generation " .. obj.metadata.generation
  return hs
end
local state = status.state
local message = status.message or ""
if state == "Failed" or state == "Aborted" or state == "MissedTargets" or state == "InvalidSchedule" then
  hs.status = "Degraded"
elseif state == "Running" then
  hs.status = "Progressing"
elseif state == "Suspended" then
  hs.status = "Suspended"
else
  hs.status = "Healthy"
end
hs.message = state .. ": " .. message
return hs
