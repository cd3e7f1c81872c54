obj.spec.release = true
return obj
