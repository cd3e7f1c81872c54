local actions = {}
local flags = (obj.spec or {}).flags
actions["emergency-rollback"] = {
  ["disabled"] = flags == nil or #flags == 0,
  ["iconClass"] = "fa fa-fw fa-undo",
  ["displayName"] = "Emergency rollback (all flags)"
}
return actions
