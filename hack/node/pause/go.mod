// The node's sandbox ("pause") image: a static process that holds a pod's namespaces.
module flagops.local/node/pause

go 1.26.0
