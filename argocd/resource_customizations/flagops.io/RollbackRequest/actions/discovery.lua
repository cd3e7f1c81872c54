-- Offered while they mean something: approve while the request awaits approval, abort while
-- it runs, release while it holds its flags.
local actions = {}
local spec = obj.spec or {}
local status = obj.status or {}
local phase = status.phase or "Pending"
local ended = phase == "Succeeded" or phase == "Failed" or phase == "Aborted" or phase == "Planned"
actions["approve"] = {
  ["disabled"] = phase ~= "AwaitingApproval" or spec.approved == true,
  ["iconClass"] = "fa fa-fw fa-check",
  ["displayName"] = "Approve rollback"
}
actions["abort"] = {
  ["disabled"] = ended or spec.abort == true,
  ["iconClass"] = "fa fa-fw fa-stop",
  ["displayName"] = "Abort rollback"
}
actions["release"] = {
  ["disabled"] = status.locked ~= true or spec.release == true,
  ["iconClass"] = "fa fa-fw fa-unlock",
  ["displayName"] = "Release flags"
}
return actions
