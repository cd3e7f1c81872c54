-- The plan's emergency rollback: a RollbackRequest for every flag of this set, created
-- beside it. No ownerReference and no Argo CD tracking: pruning or re-creating the set
-- from Git must not delete the request that holds its flags at their safe values.
local os = require("os")
local request = {
  apiVersion = "flagops.io/v1alpha1",
  kind = "RollbackRequest",
  metadata = {
    name = obj.metadata.name .. "-emergency-" .. os.date("!%Y%m%d-%H%M%S"),
    namespace = obj.metadata.namespace,
    labels = { ["flagops.io/flagset"] = obj.metadata.name }
  },
  spec = {
    flagSet = obj.metadata.name,
    all = true,
    emergency = true,
    reason = "emergency rollback of all flags, requested through Argo CD"
  }
}
return { { operation = "create", resource = request } }
