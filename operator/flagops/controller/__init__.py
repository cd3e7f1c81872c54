"""The controller: the work queue, the reconcilers that carry out decisions, Events."""
